"""The evolution stage as a user runs it with ``[evolution] checkpoints``: a missing file is
refused before any stage in one line naming the setting and the file; listed files are compared
in order, labelled by name, and replacing one's content makes the stage stale."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from support import folder_workflow, pin_device, run_cli, save_random_checkpoint, write_images

CLASSES = ["cat", "dog", "eel"]


def _workflow(base: Path, checkpoints: list[Path]) -> Path:
    data = base / "data"
    write_images(data, CLASSES, per_class=3, size=64, seed=1)
    model = save_random_checkpoint(base / "weights" / "model.pt", len(CLASSES), seed=0)
    listed = ", ".join(f'"{path}"' for path in checkpoints)
    text = folder_workflow(data, model, extra=(f"[evolution]\ncheckpoints = [{listed}]\n"
                                               "images = 6\n[occlusion]\nimages = 0\n"
                                               "[invariance]\nimages = 0\n"))
    path = base / "workflows" / "folder.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _state(base: Path, stage: str) -> str:
    result = run_cli("status", "-w", "workflows/folder.toml", cwd=base)
    assert result.returncode == 0, result.stderr
    return re.search(rf"^{stage}\s+(\S+)", result.stdout, re.MULTILINE).group(1)


@pytest.mark.slow
def test_a_missing_checkpoint_is_refused_naming_the_setting_and_the_file(tmp_path):
    present = save_random_checkpoint(tmp_path / "weights" / "epoch_1.pt", len(CLASSES), seed=1)
    _workflow(tmp_path, [present, tmp_path / "weights" / "epoch_9.pt"])
    result = run_cli("run", "evolution", "-w", "workflows/folder.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "[evolution] checkpoints" in lines[0] and "epoch_9.pt" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.zarr"))


@pytest.mark.slow
def test_listed_checkpoints_are_compared_in_order_and_their_content_is_in_the_key(tmp_path):
    first = save_random_checkpoint(tmp_path / "weights" / "early.pt", len(CLASSES), seed=1)
    second = save_random_checkpoint(tmp_path / "weights" / "late.pt", len(CLASSES), seed=2)
    _workflow(tmp_path, [second, first])
    result = run_cli("run", "evolution", "-w", "workflows/folder.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[evolution] 2 snapshots, 6 images searched" in result.stdout
    store = zarr.open_group(tmp_path / "runs" / "folder" / "evolution.zarr", mode="r")
    assert store.attrs["snapshots"] == ["late.pt", "early.pt"]
    ids = store["conv3"]["image_id"][:]
    assert ids.shape == (2, 48) and (ids < 9).all() and (ids >= 0).any()
    values = store["conv3"]["value"][:]
    assert not np.array_equal(values[0], values[1])
    assert _state(tmp_path, "evolution") == "done"
    save_random_checkpoint(first, len(CLASSES), seed=3)  # same name, other weights
    assert _state(tmp_path, "evolution") == "stale"


def test_snapshots_not_kept_by_an_earlier_training_are_refused_before_any_stage(tmp_path):
    """Training already done (not planned), but its snapshot files are not there: the run stops
    before any stage, naming the file, the setting and how to keep them."""
    from pipeline.config import load_workflow
    from pipeline.errors import UserError
    from pipeline.layout import RunLayout
    from pipeline.preflight import check_run

    path = tmp_path / "workflows" / "kept.toml"
    path.parent.mkdir()
    path.write_text(pin_device('[data]\nsource = "synthetic"\n[model]\nname = "zfnet_small"\n'
                               "image_size = 64\n[train]\nenabled = true\nepochs = 3\n"
                               "snapshot_epochs = [1, 3]\n"), encoding="utf-8")
    workflow = load_workflow(path)
    layout = RunLayout(tmp_path, workflow.name)
    (layout.synthetic_data / "val").mkdir(parents=True)
    save_random_checkpoint(layout.snapshot(1), 1000, seed=0)  # no classes.parquet: 1000
    check_run(workflow, layout, ["train", "evolution"])  # training keeps them: nothing to check
    try:
        check_run(workflow, layout, ["evolution"])
    except UserError as error:
        line = str(error)
    else:
        raise AssertionError("a missing snapshot was not refused")
    assert "epoch_003.pt" in line and "epoch 3 ([train] snapshot_epochs)" in line, line
    assert "run train --force" in line and "\n" not in line
    save_random_checkpoint(layout.snapshot(3), 1000, seed=1)
    check_run(workflow, layout, ["evolution"])
