"""Helpers the tests share: running the CLI as a user would, and a reduced demo workflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_DEMO = """
[data]
source = "synthetic"
[data.synthetic]
image_size = 64
train_per_class = 24
val_per_class = 12
seed = 3
[model]
name = "zfnet_small"
image_size = 64
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
[train]
enabled = true
epochs = 2
batch_size = 32
lr = 0.001
[activations]
batch_size = 20
chunk_size = 32
[rank]
top_k = 9
[deconv]
batch_size = 64
"""


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` as a user would, in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


