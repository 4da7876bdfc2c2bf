"""The activations store: zarr arrays chunked along images, written in whole chunks.

Layout (one group per analysed layer, named by its label)::

    <label>/max     float32 [N, C]   per image and unit, the largest activation
    <label>/argmax  int32   [N, C]   where it is, flattened y * width + x
    <label>/mean    float32 [N, C]   the mean activation
    pred            int32   [N, k]   top-k predicted classes (k = min(5, classes))
    prob            float32 [N, k]   their softmax probabilities
    label           int32   [N]      true class

Completed chunks are listed in ``progress.json`` inside the store, written after a chunk's arrays,
so a killed run redoes only what is missing and the final arrays equal an uninterrupted run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from pipeline.atomic import read_json, write_json

SUMMARIES = ("max", "argmax", "mean")
DTYPES = {"max": "float32", "argmax": "int32", "mean": "float32"}


def create_store(path: Path, n_images: int, chunk_size: int, layers: Sequence[dict],
                 top: int) -> zarr.Group:
    """Create every array of the store up front (one writer), or reopen a partial one."""
    if (path / "zarr.json").exists():
        return zarr.open_group(path, mode="r+")
    root = zarr.open_group(path, mode="w")
    for layer in layers:
        group = root.create_group(layer["label"])
        group.attrs.update(layer)
        for summary in SUMMARIES:
            group.create_array(summary, shape=(n_images, layer["channels"]),
                               chunks=(chunk_size, layer["channels"]), dtype=DTYPES[summary],
                               fill_value=0)
    root.create_array("pred", shape=(n_images, top), chunks=(chunk_size, top), dtype="int32",
                      fill_value=-1)
    root.create_array("prob", shape=(n_images, top), chunks=(chunk_size, top), dtype="float32",
                      fill_value=0)
    root.create_array("label", shape=(n_images,), chunks=(chunk_size,), dtype="int32",
                      fill_value=-1)
    root.attrs.update({"layers": [layer["label"] for layer in layers], "chunk_size": chunk_size,
                       "n_images": n_images})
    return root


def completed_chunks(path: Path) -> set[int]:
    """The chunks recorded as fully written."""
    state = read_json(path / "progress.json") or {}
    return set(state.get("done", []))


def mark_completed(path: Path, done: set[int]) -> None:
    """Record ``done`` atomically, after the chunks' arrays are written."""
    write_json(path / "progress.json", {"done": sorted(done)})


def write_chunk(root: zarr.Group, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one whole chunk of every array (keys like ``conv1/max`` or ``pred``)."""
    for key, values in arrays.items():
        root[key][start:start + len(values)] = values
