"""The activations store: zarr arrays chunked along images, written in whole chunks.

Layout (one group per analysed layer, named by its label)::

    <label>/max     float32 [image, unit]  per image and unit, the largest activation
    <label>/argmax  int32   [image, unit]  where it is, flattened y * width + x
    <label>/mean    float32 [image, unit]  the mean activation
    pred            int32   [image, top]   top-k predicted classes (k = min(5, classes))
    prob            float32 [image, top]   their softmax probabilities

The brackets are the arrays' zarr ``dimension_names``. The root and every layer group also hold
the coordinates (:mod:`pipeline.labelled`): ``image`` (ids 0..N-1), ``path``, ``label`` (true
class, in the model's class order) and ``class_name`` per image, ``unit`` per layer (0..C-1)
and ``top`` (0..k-1), written when the store is created; ``xarray.open_zarr(path,
group=label)`` reads a layer as a labelled Dataset.

A skipped (unreadable) image has NaN summaries, argmax and pred -1. A chunk is done when its
marker ``done/NNNNNN.json`` exists; the marker is written after the chunk's arrays and lists the
chunk's skipped images. Markers are separate files, so shard processes on one store never race,
and a killed run redoes only chunks without a marker: the final arrays equal an uninterrupted run's.

Attributes, each written and read through a :class:`~pipeline.metadata.Metadata` record:
every layer group's :class:`LayerMeta`, the root's :class:`StoreMeta` (when created) and
:class:`InferenceSummary` (when finished). The pipeline always writes them, so they are read
without defaults: a store without them is from an older revision, stale anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.atomic import read_json, remove, write_json
from pipeline.labelled import (
    IMAGE_COORDS,
    ImageCoords,
    array_in,
    labelled_array,
    write_image_coordinates,
    write_range,
)
from pipeline.locks import file_lock
from pipeline.metadata import Metadata

SUMMARIES = ("max", "argmax", "mean")
DTYPES = {"max": "float32", "argmax": "int32", "mean": "float32"}


@dataclass(frozen=True)
class LayerMeta(Metadata):
    """One analysed layer: its label, module, channels, map size and receptive field (px)."""

    label: str
    module: str
    channels: int
    height: int
    width: int
    receptive_field: tuple[int, int]


@dataclass(frozen=True)
class StoreMeta(Metadata):
    """The root's attributes from its creation: the layers' labels in network order, the
    chunking and the number of images (set last: a store cut off while created has none)."""

    layers: tuple[str, ...]
    chunk_size: int
    n_images: int


@dataclass(frozen=True)
class InferenceSummary(Metadata):
    """The root's attributes from the stage's end: where it ran (device kinds, no host names:
    the atlas shows this and is meant to be shared), the accuracy over the readable images, and
    whether the forward passes ran in bfloat16 autocast (rank then re-checks in float32)."""

    device: str
    top1: float
    top5: float
    n_readable: int
    bf16: bool = False  # since 0.12.0


def store_layers(store: zarr.Group) -> list[LayerMeta]:
    """The analysed layers of a finished store, in network order."""
    return [LayerMeta.from_attrs(store[label].attrs)
            for label in StoreMeta.from_attrs(store.attrs).layers]


@contextlib.contextmanager
def creation_lock(final: Path) -> Iterator[None]:
    """Serialise the setup of a store that several shard processes share (held briefly)."""
    with file_lock(final.parent / f".{final.name}.lock"):
        yield


def create_store(path: Path, images: ImageCoords, chunk_size: int, layers: Sequence[LayerMeta],
                 top: int) -> zarr.Group:
    """Create every array up front, with the coordinates of ``images`` (the whole manifest), or
    open the store a killed run or another shard created. Call under :func:`creation_lock` when
    shards may run at once."""
    n_images = len(images.ids)
    meta = StoreMeta(tuple(layer.label for layer in layers), chunk_size, n_images)
    if (path / "zarr.json").exists():
        existing = zarr.open_group(path, mode="r+")
        # n_images is set last: a store cut off while created (no root attributes yet) is
        # redone. chunk_size is not part of the stage's key (it changes no value), so a resumed
        # run may ask for another one: the chunks done so far are numbered in the old size, so
        # the store starts over.
        if "n_images" in existing.attrs and StoreMeta.from_attrs(existing.attrs) == meta:
            return existing
        remove(path)
    root = zarr.open_group(path, mode="w")
    for layer in layers:
        group = root.create_group(layer.label)
        group.attrs.update(layer.to_attrs())
        write_image_coordinates(group, images)
        write_range(group, "unit", layer.channels)
        for summary in SUMMARIES:
            labelled_array(group, summary, ("image", "unit"), (n_images, layer.channels),
                           DTYPES[summary], IMAGE_COORDS, chunks=(chunk_size, layer.channels),
                           fill_value=0)
    write_image_coordinates(root, images)
    write_range(root, "top", top)
    labelled_array(root, "pred", ("image", "top"), (n_images, top), "int32", IMAGE_COORDS,
                   chunks=(chunk_size, top), fill_value=-1)
    labelled_array(root, "prob", ("image", "top"), (n_images, top), "float32", IMAGE_COORDS,
                   chunks=(chunk_size, top), fill_value=0)
    root.attrs.update(meta.to_attrs())
    return root


def chunk_count(n_images: int, chunk_size: int) -> int:
    return -(-n_images // chunk_size)


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> list[int]:
    """The chunks shard ``(i, n)`` computes: every n-th, starting at i (all without a shard)."""
    index, count = shard or (0, 1)
    return list(range(index, n_chunks, count))


def completed_chunks(path: Path) -> set[int]:
    """The chunks whose marker exists."""
    folder = path / "done"
    return {int(marker.stem) for marker in folder.glob("*.json")} if folder.is_dir() else set()


def mark_completed(path: Path, chunk: int, skipped: list[tuple[int, str]]) -> None:
    """Record chunk ``chunk`` as written, with its skipped images, after its arrays."""
    write_json(path / "done" / f"{chunk:06d}.json", {"skipped": skipped})


def skipped_images(path: Path) -> list[tuple[int, str]]:
    """(image_id, reason) of every skipped image, from all chunk markers."""
    rows: list[tuple[int, str]] = []
    for marker in sorted((path / "done").glob("*.json")):
        rows.extend((int(i), str(reason)) for i, reason in read_json(marker)["skipped"])
    return rows


def drop_progress(path: Path) -> None:
    """Remove the chunk markers once the store is complete (they are not part of the zarr tree)."""
    remove(path / "done")
    remove(path / "finishing.json")


def write_chunk(root: zarr.Group, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one whole chunk of every array (keys like ``conv1/max`` or ``pred``)."""
    for key, values in arrays.items():
        array_in(root, key)[start:start + len(values)] = values
