"""The paper's ZFNet trained with its recipe (SGD, plateau schedule, random crops and flips,
filter radius) through the CLI: killed with SIGKILL after its first epoch and run again, it ends
with the same weights and snapshots as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from support import REPO, cli_argv, pin_device, run_cli, write_images

from pipeline.atomic import read_json
from pipeline.layout import RunLayout

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

WORKFLOW = """
[data]
source = "imagefolder"
root = "{base}/data/val"
train_root = "{base}/data/train"
[model]
name = "zfnet"
image_size = 224
resize_size = 256
[train]
enabled = true
recipe = "zf2013"
epochs = 3
batch_size = 4
plateau_patience = 1
snapshot_epochs = [1, 3]
"""
CLASSES = ["ant", "bee"]


def _setup(base: Path) -> RunLayout:
    """Eight training and four analysed images of two classes, a little larger than 224 px."""
    write_images(base / "data" / "train", CLASSES, per_class=4, size=240, seed=1)
    write_images(base / "data" / "val", CLASSES, per_class=2, size=240, seed=2)
    (base / "workflows").mkdir(parents=True)
    (base / "workflows" / "zf.toml").write_text(pin_device(WORKFLOW.format(base=base)),
                                               encoding="utf-8")
    return RunLayout(base, "zf")


def _run_train(base: Path) -> subprocess.CompletedProcess:
    result = run_cli("run", "train", "-w", "workflows/zf.toml", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _kill_after_first_checkpoint(base: Path, layout: RunLayout) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(cli_argv("run", "train", "-w", "workflows/zf.toml", cwd=base),
                               cwd=base, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if layout.checkpoint(1).exists():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"no checkpoint of epoch 1 appeared (exit status {process.poll()})")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(ours: Path, theirs: Path) -> None:
    a, b = _weights(ours), _weights(theirs)
    assert list(a) == list(b)
    for name, value in a.items():
        assert torch.equal(value, b[name]), f"{ours.name}: {name}"


def test_recipe_training_killed_after_an_epoch_resumes_to_the_same_weights(tmp_path):
    whole, killed = _setup(tmp_path / "whole"), _setup(tmp_path / "killed")
    _run_train(whole.base)
    _kill_after_first_checkpoint(killed.base, killed)
    assert not killed.stamp("train").exists() and not killed.model.exists()
    resumed = _run_train(killed.base)
    assert "[train] resuming after epoch" in resumed.stdout

    for layout in (whole, killed):  # only the newest checkpoint is kept
        assert sorted(p.name for p in layout.checkpoints.iterdir()) == ["epoch_003.pt"]
        assert sorted(p.name for p in layout.snapshots.iterdir()) == [
            "epoch_001.pt", "epoch_003.pt"]
    _assert_same_weights(killed.model, whole.model)
    for epoch in (1, 3):
        _assert_same_weights(killed.snapshot(epoch), whole.snapshot(epoch))
    _assert_same_weights(whole.snapshot(3), whole.model)
    assert read_json(killed.metrics) == read_json(whole.metrics)
    # The recipe really ran: the plateau divided the rate, and the filters stayed in radius.
    checkpoint = torch.load(whole.checkpoint(3), map_location="cpu", weights_only=True)
    assert checkpoint["schedule"]["lr"] < 0.01
    conv1 = _weights(whole.model)["features.conv1.weight"]
    assert conv1.pow(2).mean(dim=(1, 2, 3)).sqrt().max().item() <= 0.1 + 1e-6
    assert set(read_json(whole.metrics)) == {"epoch", "train_loss", "val_accuracy", "lr"}
