"""Stamps by content: a stage is stale only when what decides its outputs changed.

Each test works on a copy of a finished run of the reduced demo.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from support import (
    TINY_DEMO,
    TINY_DEMO_UNPINNED,
    folder_workflow,
    pin_device,
    run_cli,
    save_random_checkpoint,
    write_images,
)

from pipeline.atomic import read_json
from pipeline.config import load_workflow
from pipeline.layout import RunLayout
from pipeline.runner import Runner
from pipeline.stages import list_stages, registry

STAGES = [stage.name for stage in list_stages()]  # the reduced demo runs every stage
#: The stages that read neither rank nor deconv (the experiments read activations).
BESIDE_RANK = ["occlusion", "evolution", "invariance"]
LEGACY = Path(__file__).parent / "legacy_0_3_0"
RELEASE_0_3_0 = ["prepare", "train", "activations", "rank", "deconv", "render"]  # legacy_0_3_0/


@pytest.fixture
def finished(tiny_run: Path, tmp_path: Path) -> Path:
    base = tmp_path / "base"
    shutil.copytree(tiny_run, base, symlinks=True)
    return base


def _runner(base: Path, text: str = TINY_DEMO) -> Runner:
    path = base / "workflows" / "tiny.toml"
    path.write_text(text, encoding="utf-8")
    workflow = load_workflow(path)
    return Runner(workflow, RunLayout(base=base, workflow=workflow.name))


def _states(base: Path, text: str = TINY_DEMO) -> dict[str, str]:
    return {row.name: row.state for row in _runner(base, text).status()}


def _ran(stdout: str) -> list[str]:
    return re.findall(r"^\[(\w+)\] running", stdout, flags=re.MULTILINE)


@pytest.mark.slow
def test_epochs_rerun_train_and_what_follows_not_prepare(finished):
    text = TINY_DEMO.replace("epochs = 2", "epochs = 3")
    assert _states(finished, text) == {"prepare": "done", **dict.fromkeys(STAGES[1:], "stale")}
    result = run_cli("run", "all", "-w", "workflows/tiny.toml", cwd=finished)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _ran(result.stdout) == STAGES[1:]
    assert _states(finished, text) == dict.fromkeys(STAGES, "done")


def test_execution_options_never_make_a_stage_stale(finished):
    # The finished run's devices are "cpu" (TINY_DEMO): "cpu:0" is another value, the same device.
    text = pin_device(TINY_DEMO_UNPINNED.replace(
        "chunk_size = 32", 'chunk_size = 16\nnum_workers = 2\nprefetch = 4\ndevice = "cpu:0"'
    ).replace("batch_size = 64", "batch_size = 7") + '\n[dask]\nshards = 3\n')
    assert _states(finished, text) == dict.fromkeys(STAGES, "done")


def test_a_rerun_with_identical_outputs_keeps_downstream_done(finished):
    """prepare reruns (forced) and writes a byte-identical manifest: nothing after it is stale."""
    runner = _runner(finished)
    before = read_json(runner.layout.stamp("prepare"))
    assert runner.run("prepare") == ["prepare"]
    after = read_json(runner.layout.stamp("prepare"))
    assert after["finished"] >= before["finished"] and after["digest"] == before["digest"]
    assert _states(finished) == dict.fromkeys(STAGES, "done")


def test_a_rerun_with_new_outputs_makes_downstream_stale(finished):
    text = TINY_DEMO.replace("lr = 0.001", "lr = 0.002")
    runner = _runner(finished, text)
    runner.run("train")
    assert _states(finished, text) == {"prepare": "done", "train": "done",
                                        **dict.fromkeys(STAGES[2:], "stale")}


def test_bumping_a_revision_makes_exactly_that_stage_and_its_downstream_stale(
        finished, monkeypatch):
    stage = registry.get_stage("rank")
    monkeypatch.setitem(registry._STAGES, "rank",
                        dataclasses.replace(stage, revision=stage.revision + 1))
    downstream = ["rank", "deconv", "featurevis", "sanity", "render"]
    assert _states(finished) == {**dict.fromkeys(STAGES[:3] + BESIDE_RANK, "done"),
                                 **dict.fromkeys(downstream, "stale")}
    # The new revision writes the same tables here, so its downstream is done again at once.
    runner = _runner(finished)
    assert runner.run("rank") == ["rank"]
    assert _states(finished) == dict.fromkeys(STAGES, "done")


def test_a_deleted_output_is_missing_not_done(finished):
    (finished / "runs" / "tiny" / "units.parquet").unlink()
    states = _states(finished)
    assert states["rank"] == "missing" and states["deconv"] == "stale"


def test_a_new_checkpoint_under_the_same_name_is_new_work(finished):
    """[model] checkpoint's content, not its name, is part of the key of the stages that load it."""
    model = finished / "runs" / "tiny" / "model.pt"
    mine = finished / "mine.pt"
    shutil.copy(model, mine)
    text = pin_device(TINY_DEMO_UNPINNED.replace(
        "[train]\nenabled = true", "[train]\nenabled = false").replace(
        'name = "zfnet_small"', f'name = "zfnet_small"\ncheckpoint = "{mine}"').replace(
        "snapshot_epochs = [1, 2]\n", ""))
    loading = [name for name in STAGES[2:] if name != "evolution"]
    runner = _runner(finished, text)
    runner.run("all")
    assert _states(finished, text) == {"prepare": "done", "train": "off", "evolution": "off",
                                        **dict.fromkeys(loading, "done")}
    import torch

    state = torch.load(mine, weights_only=True)
    state["features.conv1.bias"] += 1
    torch.save(state, mine)
    assert _states(finished, text) == {"prepare": "done", "train": "off", "evolution": "off",
                                        **dict.fromkeys(loading, "stale")}


@pytest.mark.slow
def test_stamps_of_release_0_3_0_are_stale_and_said_once(finished):
    """The stamps in legacy_0_3_0/ were written by release 0.3.0 (keyed by per-run tokens).
    They are no longer migrated: their stages are stale, ``status`` and ``run`` say so in one
    line, and the run computes them again."""
    stamps = finished / "runs" / "tiny" / "stamps"
    for path in LEGACY.glob("*.json"):
        shutil.copy(path, stamps / path.name)
    states = _states(finished)
    assert {name: states[name] for name in RELEASE_0_3_0} == dict.fromkeys(RELEASE_0_3_0,
                                                                          "stale")
    status = run_cli("status", "-w", "workflows/tiny.toml", cwd=finished)
    said = [line for line in status.stdout.splitlines() if "0.3.0" in line]
    assert len(said) == 1 and "no longer read" in said[0], status.stdout
    result = run_cli("run", "all", "-w", "workflows/tiny.toml", cwd=finished)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert len([line for line in result.stdout.splitlines() if "0.3.0" in line]) == 1
    assert set(RELEASE_0_3_0) <= set(_ran(result.stdout)), result.stdout
    assert _states(finished) == dict.fromkeys(STAGES, "done")
    assert "0.3.0" not in run_cli("status", "-w", "workflows/tiny.toml", cwd=finished).stdout


@pytest.mark.slow
def test_the_image_files_are_part_of_the_keys_of_the_stages_that_read_them(tmp_path,
                                                                          write_workflow):
    """prepare's key covers the listing of the image folders, and the keys of the stages that
    read images cover their files' sizes and times: a file that is not an image changes
    nothing; an image replaced under its own name, or a new one, is new work."""
    data = tmp_path / "data"
    write_images(data, ["cat", "dog"], per_class=3)
    checkpoint = save_random_checkpoint(tmp_path / "model.pt", num_classes=2)
    text = folder_workflow(data, checkpoint, extra="[rank]\ntop_k = 2\n").replace(
        "[activations]\n", '[activations]\nmodules = ["features.relu1"]\n')
    workflow = str(write_workflow(text))
    assert run_cli("run", "all", "-w", workflow, cwd=tmp_path).returncode == 0
    (data / "cat" / "notes.txt").write_text("not an image")
    again = run_cli("run", "all", "-w", workflow, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _ran(again.stdout) == []
    replaced = data / "cat" / "cat_0001.JPEG"
    replaced.write_bytes((data / "dog" / "dog_0002.JPEG").read_bytes())
    third = run_cli("run", "all", "-w", workflow, cwd=tmp_path)
    # featurevis reads no image, but what rank made of them (each unit's largest activation)
    reading = ["prepare", "activations", "rank", "deconv", "featurevis", "occlusion", "invariance",
               "sanity", "render"]
    assert _ran(third.stdout) == reading
    write_images(data, ["dog"], per_class=4, seed=9)  # one more dog
    fourth = run_cli("run", "all", "-w", workflow, cwd=tmp_path)
    assert _ran(fourth.stdout) == reading
    away = tmp_path / "away"
    data.rename(away)  # the data disk is unmounted: finished work is not stale
    assert _states(tmp_path, text) == {"prepare": "done", "train": "off", "evolution": "off",
                                       **dict.fromkeys(reading[1:], "done")}
