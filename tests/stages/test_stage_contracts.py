"""Stages declare what they read and write (catalog artifacts) and what config they read, and
are held to it."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest
from support import pin_workflow

from pipeline import catalog
from pipeline.config import ModelConfig, Workflow
from pipeline.layout import RunLayout
from pipeline.stages import get_stage, list_stages, readers_of, register_stage, stage_writing
from pipeline.stages.context import StageContext
from pipeline.workflow_view import UndeclaredConfig, WorkflowView

WORKFLOW = pin_workflow(Workflow(name="w", model=ModelConfig(name="zfnet_small")))


def test_every_artifact_is_written_by_exactly_one_stage_inside_the_run(tmp_path):
    layout = RunLayout(tmp_path, "w")
    written = [item for stage in list_stages() for item in stage.writes]
    assert len(written) == len(set(written)), "two stages declare the same artifact"
    assert set(written) == set(catalog.ARTIFACTS)
    for stage in list_stages():
        assert stage.writes, stage.name
        for path in stage.output_paths(WORKFLOW, layout, digested_only=False):
            assert path.is_relative_to(tmp_path), (stage.name, path)


def test_a_stage_reading_what_no_earlier_stage_writes_is_refused_at_registration():
    orphan = catalog.Artifact("orphan", lambda layout: layout.run_dir / "orphan", "json", "")
    with pytest.raises(ValueError, match="reads orphan, which no stage registered before it "
                                         "writes"):
        register_stage("contract_probe", reads=(orphan,))(lambda ctx: None)
    assert "contract_probe" not in {stage.name for stage in list_stages()}


def test_register_stage_takes_no_boolean_flags_for_its_inputs():
    parameters = inspect.signature(register_stage).parameters
    assert not [name for name, p in parameters.items() if p.annotation in (bool, "bool")]


def test_the_input_stages_are_those_writing_what_a_stage_reads():
    inputs = {stage.name: stage.inputs for stage in list_stages()}
    assert inputs == {
        "prepare": (), "train": ("prepare",), "activations": ("prepare", "train"),
        # rank reads the model and images to re-check a bfloat16 store in float32
        "rank": ("prepare", "train", "activations"),
        "deconv": ("prepare", "train", "activations", "rank"),
        "featurevis": ("prepare", "train", "activations", "rank"),
        "occlusion": ("prepare", "train", "activations"),
        "evolution": ("prepare", "train", "activations"),
        "invariance": ("prepare", "train", "activations"),
        "sanity": ("prepare", "train", "activations", "rank", "deconv"),
        "render": ("prepare", "train", "activations", "rank", "deconv", "featurevis",
                   "occlusion", "evolution", "invariance", "sanity")}


def test_what_a_stage_reads_from_outside_the_run_is_declared():
    external = {stage.name: {item.name for item in stage.external} for stage in list_stages()}
    assert external["prepare"] == {"listing"}
    assert external["evolution"] == {"checkpoints", "model_file", "images"}
    for name in ("activations", "rank", "deconv", "occlusion", "invariance", "sanity"):
        assert external[name] == {"weights", "model_file", "images"}, name
    assert external["render"] == {"weights", "model_file"}
    assert external["featurevis"] == {"weights", "model_file"}  # no images: it makes its own
    assert [stage.name for stage in list_stages() if stage.sharded] == ["activations"]


def test_a_stage_cannot_stage_or_open_what_it_does_not_declare(tmp_path):
    context = StageContext(WORKFLOW, RunLayout(tmp_path, "w"), get_stage("rank"), "key")
    assert context.output(catalog.TOPK).name == ".topk.parquet.tmp"
    with pytest.raises(RuntimeError, match=r"stage 'rank' writes projections, which it does not "
                                           r"declare in register_stage\(writes=...\)"):
        context.output(catalog.PROJECTIONS)
    with pytest.raises(RuntimeError, match=r"stage 'rank' reads projections, which it does not "
                                           r"declare in register_stage\(reads=...\)"):
        context.read(catalog.PROJECTIONS)
    assert context.path(catalog.ACTIVATIONS) == RunLayout(tmp_path, "w").activations


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
    assert not catalog.SYNTHETIC_DATA.digested


def test_which_stage_writes_and_reads_an_artifact_comes_from_the_registry():
    assert stage_writing(catalog.TOPK).name == "rank"
    assert stage_writing(catalog.MANIFEST).name == "prepare"
    assert stage_writing(catalog.PROJECTIONS).name == "deconv"
    assert [stage.name for stage in readers_of(catalog.PROJECTIONS)] == ["sanity", "render"]
    assert catalog.artifact("topk") is catalog.TOPK
    with pytest.raises(KeyError):
        catalog.artifact("lock")


def test_every_declared_config_key_names_a_real_section_or_option():
    for stage in list_stages():
        for key in stage.declared_config:
            section, _, option = key.partition(".")
            value = WORKFLOW.section(section)
            assert dataclasses.is_dataclass(value), (stage.name, key)
            if option:
                assert option in {spec.name for spec in dataclasses.fields(value)}, \
                    (stage.name, key)


def test_deconv_reads_no_rank_config():
    """top_k reaches deconv through rank's metadata, never from the config."""
    assert not [key for key in get_stage("deconv").declared_config
                if key.split(".")[0] == "rank"]
    view = StageContext(WORKFLOW, RunLayout(".", "w"), get_stage("deconv"), "key").workflow
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
