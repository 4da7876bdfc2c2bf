"""Training with DataLoader workers (``[train] num_workers``): the random crops still resume
exactly after a SIGKILL, and unreadable images found in a worker still reach the warning."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from support import REPO, cli_argv, pin_device, run_cli, write_images

from pipeline.layout import RunLayout

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

WORKFLOW = """
[data]
source = "imagefolder"
root = "{base}/data/val"
train_root = "{base}/data/train"
[model]
name = "zfnet_small"
image_size = 32
resize_size = 40
[train]
enabled = true
optimizer = "sgd"
lr = 0.01
augment = true
epochs = 4
batch_size = 4
num_workers = 2
[occlusion]
images = 0
[invariance]
images = 0
"""


def _setup(base: Path) -> RunLayout:
    write_images(base / "data" / "train", ["a", "b"], per_class=6, size=48, seed=1)
    write_images(base / "data" / "val", ["a", "b"], per_class=2, size=48, seed=2)
    (base / "data" / "train" / "a" / "broken.JPEG").write_bytes(b"not a jpeg")
    (base / "workflows").mkdir(parents=True)
    (base / "workflows" / "w.toml").write_text(pin_device(WORKFLOW.format(base=base)),
                                              encoding="utf-8")
    return RunLayout(base, "w")


def _kill_after_a_checkpoint(layout: RunLayout) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    process = subprocess.Popen(cli_argv("run", "train", "-w", "workflows/w.toml",
                                        cwd=layout.base), cwd=layout.base, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if layout.checkpoints.is_dir() and any(layout.checkpoints.glob("epoch_*.pt")):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.005)
    process.kill()
    pytest.fail(f"no epoch checkpoint appeared (exit status {process.poll()})")


def test_workers_resume_to_the_same_weights_and_report_unreadable_images(tmp_path):
    whole, killed = _setup(tmp_path / "whole"), _setup(tmp_path / "killed")
    result = run_cli("run", "train", "-w", "workflows/w.toml", cwd=whole.base)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 unreadable images left out of training" in result.stdout
    assert "a/broken.JPEG" in result.stdout
    _kill_after_a_checkpoint(killed)
    assert not killed.model.exists()
    resumed = run_cli("run", "train", "-w", "workflows/w.toml", cwd=killed.base)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[train] resuming after epoch" in resumed.stdout
    ours = torch.load(killed.model, weights_only=True)
    theirs = torch.load(whole.model, weights_only=True)
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
