"""The train stage keeps ``[train] snapshot_epochs``' weights and only its newest checkpoint:
a fresh start clears stale snapshots, a resume keeps those it can trust and writes again the
one a kill cut off, and the snapshots are an output whose content stamps follow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import pin_device, write_images

from pipeline.atomic import read_json
from pipeline.cli import main
from pipeline.layout import RunLayout

WORKFLOW = """
[data]
source = "imagefolder"
root = "{base}/data/val"
train_root = "{base}/data/train"
[model]
name = "zfnet_small"
image_size = 32
[train]
enabled = true
optimizer = "sgd"
lr = 0.01
filter_radius = 0.1
epochs = 3
batch_size = 4
seed = {seed}
snapshot_epochs = {snapshots}
"""


@pytest.fixture
def run(tmp_path: Path, monkeypatch):
    """``run(seed, snapshots, *flags)``: write the workflow, run the train stage in-process."""
    write_images(tmp_path / "data" / "train", ["a", "b"], per_class=6, size=40, seed=1)
    write_images(tmp_path / "data" / "val", ["a", "b"], per_class=2, size=40, seed=2)
    (tmp_path / "workflows").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")

    def train(seed: int, snapshots: list[int], *flags: str) -> RunLayout:
        text = pin_device(WORKFLOW.format(base=tmp_path, seed=seed, snapshots=snapshots))
        (tmp_path / "workflows" / "snap.toml").write_text(text, encoding="utf-8")
        assert main(["run", "train", "-w", "workflows/snap.toml", *flags]) == 0
        return RunLayout(tmp_path, "snap")

    return train


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(a: Path, b: dict[str, torch.Tensor]) -> bool:
    ours = _weights(a)
    return list(ours) == list(b) and all(torch.equal(ours[k], b[k]) for k in b)


def test_snapshots_follow_the_runs_that_made_them(run, capsys):
    layout = run(0, [1, 3])
    assert _names(layout.checkpoints) == ["epoch_003.pt"]
    assert _names(layout.snapshots) == ["epoch_001.pt", "epoch_003.pt"]
    assert "runs/snap/snapshots" in read_json(layout.stamp("train"))["outputs"]
    first, last = _weights(layout.snapshot(1)), _weights(layout.snapshot(3))
    assert _same(layout.model, last) and not _same(layout.model, first)

    # A kill between the last checkpoint and its snapshot: the rerun writes it from the
    # checkpoint, without training again.
    layout.snapshot(3).unlink()
    capsys.readouterr()
    run(0, [1, 3], "--force")
    assert "[train] resuming after epoch 3" in capsys.readouterr().out
    assert _same(layout.snapshot(3), last) and _same(layout.snapshot(1), first)

    # An earlier snapshot gone (it cannot be made again): training starts over, to the same
    # weights, since everything is seeded.
    layout.snapshot(1).unlink()
    run(0, [1, 3], "--force")
    out = capsys.readouterr().out
    assert "epoch_001.pt is missing: not resuming" in out and "resuming after" not in out
    assert _same(layout.snapshot(1), first) and _same(layout.snapshot(3), last)

    # Another seed is a fresh start: no snapshot of the old run survives.
    run(1, [2])
    assert _names(layout.snapshots) == ["epoch_002.pt"]
    assert _names(layout.checkpoints) == ["epoch_003.pt"]
    assert not _same(layout.model, last)

    # Without snapshot_epochs the folder goes, and is no output any more.
    run(1, [])
    assert not layout.snapshots.exists()
    assert read_json(layout.stamp("train"))["outputs"] == ["runs/snap/model.pt",
                                                           "runs/snap/metrics.json"]
