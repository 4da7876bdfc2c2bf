"""Helpers the tests share: running the CLI as a user would, and a reduced demo workflow."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Appended to a workflow a test runs whole that has no [featurevis] section: the stage still
#: runs (every model the pipeline takes must work with it), in seconds rather than hours.
QUICK_FEATUREVIS = """
[featurevis]
steps = 4
units = 2
"""

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
snapshot_epochs = [1, 2]
[activations]
batch_size = 20
chunk_size = 32
[rank]
top_k = 9
[deconv]
batch_size = 64
methods = ["deconvnet", "guided", "gradient"]
[featurevis]
steps = 8
"""


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` as a user would, in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)




def write_images(root: Path, classes: list[str], per_class: int, size: int = 48,
                 fmt: str = "JPEG", seed: int = 0) -> list[Path]:
    """A class-per-folder image set of smooth random colour images; returns the files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = []
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((size, size), Image.BILINEAR)
            path = root / name / f"{name}_{i:04d}.{fmt}"
            image.save(path, format="JPEG" if fmt == "JPEG" else fmt)
            files.append(path)
    return files


def save_random_checkpoint(path: Path, num_classes: int, seed: int = 0) -> Path:
    """A randomly initialised zfnet_small state dict, saved as a user's checkpoint would be."""
    import torch

    from pipeline.models import get_model

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(get_model("zfnet_small", num_classes=num_classes).state_dict(), path)
    return path


def folder_workflow(data: Path, checkpoint: Path, chunk_size: int = 8, batch_size: int = 4) -> str:
    """A workflow over an image folder with a fixed zfnet_small checkpoint (no training)."""
    return f"""
[data]
source = "imagefolder"
root = "{data}"
[model]
name = "zfnet_small"
checkpoint = "{checkpoint}"
image_size = 64
[activations]
batch_size = {batch_size}
chunk_size = {chunk_size}
[featurevis]
steps = 8
"""


def store_arrays(path: Path) -> dict:
    """Every array of a zarr store, by key, as numpy."""
    import numpy as np
    import zarr

    root = zarr.open_group(path, mode="r")
    arrays = {}

    def visit(group, prefix=""):
        for name, array in group.arrays():
            arrays[prefix + name] = np.asarray(array[:])
        for name, sub in group.groups():
            visit(sub, f"{prefix}{name}/")

    visit(root)
    return arrays


class _QuietHandler(SimpleHTTPRequestHandler):
    """No request log: it would land in the middle of pytest's progress line."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass


@contextlib.contextmanager
def served_copy(folder: Path, www: Path, prefix: str) -> Iterator[str]:
    """``folder`` copied to ``www/prefix`` and served by a local HTTP server; yields the URL of
    the copy (a static site must work under any URL prefix)."""
    shutil.copytree(folder, www / prefix)
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{prefix}/"
    finally:
        server.shutdown()
        server.server_close()


def fill_hub_cache(cache, hf_hub_id: str, state: dict) -> None:
    """Put the state dict ``state`` where huggingface_hub keeps ``hf_hub_id``'s weights."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + hf_hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))


#: A small model file of a user: non-sequential, functional ReLUs (tests of [model] factory).
OWN_MODEL_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn


class TwoPaths(nn.Module):
    """Non-sequential, with functional ReLUs: two branches added, then pooled."""

    def __init__(self, num_classes, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 5, stride=2, padding=2)
        self.left = nn.Conv2d(width, width, 3, padding=1)
        self.right = nn.Conv2d(width, width, 1)
        self.top = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        x = F.relu(self.left(x)) + F.relu(self.right(x))
        x = F.relu(self.top(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(num_classes, width=8):
    return TwoPaths(num_classes, width)
'''


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle (a path back to its start) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for following in sorted(graph[node]):
            if following not in index:
                connect(following)
                low[node] = min(low[node], low[following])
            elif following in on_stack:
                low[node] = min(low[node], index[following])
        if low[node] == index[node]:
            component = set()
            while node not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(_shortest_cycle(graph, component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def _shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one
