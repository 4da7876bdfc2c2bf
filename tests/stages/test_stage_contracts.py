"""Stages declare what they write and what config they read, and are held to it."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from pipeline.config import ModelConfig, Workflow
from pipeline.layout import RunLayout
from pipeline.stages import Output, get_stage, list_stages, register_stage, stage_writing
from pipeline.stages.context import StageContext
from pipeline.workflow_view import UndeclaredConfig, WorkflowView

WORKFLOW = Workflow(name="w", model=ModelConfig(name="zfnet_small"))


def test_every_declared_output_is_a_path_of_the_run_layout(tmp_path):
    layout = RunLayout(tmp_path, "w")
    for stage in list_stages():
        assert stage.outputs, stage.name
        for path in stage.output_paths(WORKFLOW, layout, digested_only=False):
            assert path.is_relative_to(tmp_path), (stage.name, path)


def test_an_output_that_is_not_a_layout_path_is_refused_at_registration():
    with pytest.raises(ValueError, match="'topk_table' is not a path of RunLayout"):
        register_stage("contract_probe", outputs=("topk_table",))(lambda ctx: None)
    assert "contract_probe" not in {stage.name for stage in list_stages()}


def test_a_stage_cannot_stage_an_output_it_does_not_declare(tmp_path):
    context = StageContext(WORKFLOW, RunLayout(tmp_path, "w"), "deconv", "key")
    assert context.output(context.layout.projections).name == ".projections.zarr.tmp"
    with pytest.raises(RuntimeError, match=r"stage 'deconv' writes .*topk\.parquet, which it "
                                           r"does not declare"):
        context.output(context.layout.topk)


def test_the_digest_follows_the_declared_outputs_and_their_conditions(tmp_path):
    layout = RunLayout(tmp_path, "w")
    train = get_stage("train")
    assert train.output_paths(WORKFLOW, layout) == (layout.model, layout.metrics)
    snapshots = dataclasses.replace(WORKFLOW, train=dataclasses.replace(
        WORKFLOW.train, snapshot_epochs=(1,)))
    assert train.output_paths(snapshots, layout)[-1] == layout.snapshots
    # The demo's generated images are written, but their settings file stands for them.
    prepare = get_stage("prepare")
    assert layout.synthetic_data not in prepare.output_paths(WORKFLOW, layout)
    assert layout.synthetic_settings in prepare.output_paths(WORKFLOW, layout)
    assert layout.synthetic_data in prepare.output_paths(WORKFLOW, layout, digested_only=False)
    assert Output("synthetic_data", digested=False) in prepare.outputs


def test_which_stage_writes_a_file_comes_from_the_registry():
    assert stage_writing("topk").name == "rank"
    assert stage_writing("manifest").name == "prepare"
    assert stage_writing("projections").name == "deconv"
    written = [output.path for stage in list_stages() for output in stage.outputs]
    assert len(written) == len(set(written)), "two stages declare the same output"
    with pytest.raises(KeyError, match="no stage declares the output 'lock'"):
        stage_writing("lock")


def test_every_declared_config_key_names_a_real_section_or_option():
    for stage in list_stages():
        for key in stage.config:
            section, _, option = key.partition(".")
            value = WORKFLOW.section(section)
            assert dataclasses.is_dataclass(value), (stage.name, key)
            if option:
                assert option in {spec.name for spec in dataclasses.fields(value)}, \
                    (stage.name, key)


def test_deconv_reads_no_rank_config():
    """top_k reaches deconv through rank's metadata, never from the config."""
    assert not [key for key in get_stage("deconv").config if key.split(".")[0] == "rank"]
    view = StageContext(WORKFLOW, RunLayout(".", "w"), "deconv", "key").workflow
    with pytest.raises(UndeclaredConfig, match=r"stage 'deconv' reads config section \[rank\]"):
        _ = view.rank.top_k


def test_the_view_gives_declared_config_and_refuses_the_rest():
    view = WorkflowView(WORKFLOW, "probe", ("model", "data.source", "train.enabled"))
    assert view.model == WORKFLOW.model and view.name == "w"
    assert view.data.source == WORKFLOW.data.source
    assert view.section("train").enabled is False
    with pytest.raises(UndeclaredConfig, match=r"stage 'probe' reads data\.root, which it does "
                                               r"not declare; add 'data\.root'"):
        _ = view.data.root
    with pytest.raises(UndeclaredConfig, match=r"\[deconv\]"):
        view.section("deconv")
    # A shard task carries the view to a dask worker: it stays a view there.
    again = pickle.loads(pickle.dumps(view.with_absolute_paths()))
    assert isinstance(again, WorkflowView) and again.data.source == WORKFLOW.data.source
    with pytest.raises(UndeclaredConfig):
        _ = again.rank
