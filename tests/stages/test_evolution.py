"""The evolution stage as a user runs it with ``[evolution] checkpoints``: a missing file is
refused before any stage in one line naming the setting and the file; listed files are compared
in order, labelled by name, and replacing one's content makes the stage stale."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import zarr
from support import folder_workflow, run_cli, save_random_checkpoint, write_images

CLASSES = ["cat", "dog", "eel"]


def _workflow(base: Path, checkpoints: list[Path]) -> Path:
    data = base / "data"
    write_images(data, CLASSES, per_class=3, size=64, seed=1)
    model = save_random_checkpoint(base / "weights" / "model.pt", len(CLASSES), seed=0)
    listed = ", ".join(f'"{path}"' for path in checkpoints)
    text = folder_workflow(data, model) + (f"[evolution]\ncheckpoints = [{listed}]\nimages = 6\n"
                                           "[occlusion]\nimages = 0\n[invariance]\nimages = 0\n")
    path = base / "workflows" / "folder.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _state(base: Path, stage: str) -> str:
    result = run_cli("status", "-w", "workflows/folder.toml", cwd=base)
    assert result.returncode == 0, result.stderr
    return re.search(rf"^{stage}\s+(\S+)", result.stdout, re.MULTILINE).group(1)


def test_a_missing_checkpoint_is_refused_naming_the_setting_and_the_file(tmp_path):
    present = save_random_checkpoint(tmp_path / "weights" / "epoch_1.pt", len(CLASSES), seed=1)
    _workflow(tmp_path, [present, tmp_path / "weights" / "epoch_9.pt"])
    result = run_cli("run", "evolution", "-w", "workflows/folder.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "[evolution] checkpoints" in lines[0] and "epoch_9.pt" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.zarr"))


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
