"""Named dimensions and coordinates in the run's zarr stores, so the tools of the field read them.

Every array a stage writes declares zarr v3 ``dimension_names`` (``image``, ``unit``, ``rank``,
``tile_y``, ``tile_x``, ``channel``, ...), and each group that holds arrays along a dimension
also holds that dimension's coordinate: an array named after it (``image``: the image ids,
``unit``: the unit numbers, ``rank``: 0..k-1, ``method``: the projection methods' names). The
groups along ``image`` (activations, occlusion) also carry per image ``path`` (relative to the
data folder), ``label`` (the true class, in the model's class order; -1 when the folder is not
one of the model's classes) and ``class_name``, listed in the data arrays' ``coordinates``
attribute, the CF convention xarray follows (projections carry them per unit and rank). So
``xarray.open_zarr(store, group=layer)`` is a labelled Dataset with no code of ours: select by
image id, group by class name.

Coordinates are written once, when a store is created, from the manifest: they are what the
run's images are, not results, and a killed run resumes with them in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import zarr

#: The per-image coordinates beside ``image``, in the order they are listed.
IMAGE_COORDS = ("path", "label", "class_name")
#: The colour channels of a picture array (the last dimension of patches and projections).
CHANNELS = ("r", "g", "b")
#: The channels of a picture array by the model's input channel count (see
#: ``pipeline.data.images.CHANNEL_MODES``): grey, RGB, or RGB and alpha.
CHANNEL_NAMES = {1: ("grey",), 3: CHANNELS, 4: (*CHANNELS, "a")}
#: The sides of a box in input pixels (the last dimension of the boxes arrays).
BOX_SIDES = ("top", "left", "bottom", "right")


@dataclass(frozen=True)
class ImageCoords:
    """Who some of the run's images are: ids, paths relative to the data folder, true labels
    and their class names, aligned."""

    ids: np.ndarray
    paths: np.ndarray
    labels: np.ndarray
    class_names: np.ndarray

    @classmethod
    def of_run(cls, manifest: pd.DataFrame, classes: pd.DataFrame,
               ids: Sequence[int] | np.ndarray | None = None) -> ImageCoords:
        """The images ``ids`` (default: all, in id order) of a run's manifest; ``classes`` is
        the run's class table (``label``, ``name``)."""
        rows = manifest if ids is None else manifest.iloc[np.asarray(ids, dtype=np.int64)]
        names = classes.set_index("label")["name"].astype(str)
        labels = rows["label"].to_numpy(np.int32)
        return cls(np.arange(len(rows), dtype=np.int64) if ids is None
                   else np.asarray(ids, dtype=np.int64),
                   rows["path"].astype(str).to_numpy(),
                   labels, names.reindex(labels).fillna("").to_numpy(dtype=object))

    @classmethod
    def numbered(cls, n: int, labels: Sequence[int] | np.ndarray | None = None) -> ImageCoords:
        """``n`` images known by their ids alone (stores made outside a run: benchmarks)."""
        labels = np.full(n, -1, np.int32) if labels is None else np.asarray(labels, np.int32)
        return cls(np.arange(n, dtype=np.int64), np.full(n, "", dtype=str), labels,
                   np.full(n, "", dtype=str))


def array_in(group: zarr.Group, path: str) -> zarr.Array:
    """The array ``group/path`` (zarr types a member as an array or a group; the stores'
    layouts say which it is)."""
    return cast(zarr.Array, group[path])


def group_in(group: zarr.Group, path: str) -> zarr.Group:
    """The group ``group/path`` (zarr types a member as an array or a group; the stores'
    layouts say which it is)."""
    return cast(zarr.Group, group[path])


#: Chunk files side by side in their array's folder (``c.0.12.0.0.0``), not a folder per index
#: (``c/0/12/0/0/0``), for arrays of a chunk per unit: thousands per store, each written into
#: four new folders made by zarr one ``mkdir`` at a time, then walked by the stamp's digest and
#: read by ``render``. The deconv stage wrote AlexNet's 5,000-image store 4 s faster (41 s
#: against 45 s), with 4,890 entries instead of 22,225.
FLAT_CHUNK_KEYS = {"name": "default", "separator": "."}


def labelled_array(group: zarr.Group, name: str, dims: Sequence[str], shape: Sequence[int],
                   dtype: Any, coords: Sequence[str] = (), **options: Any) -> zarr.Array:
    """Create ``group/name`` with its dimension names (one per axis of ``shape``); ``coords``:
    the group's non-dimension coordinates that label it (e.g. :data:`IMAGE_COORDS`)."""
    if len(dims) != len(shape):
        raise ValueError(f"{name}: {len(dims)} dimension names for {len(shape)} axes")
    array = group.create_array(name, shape=tuple(shape), dtype=dtype,
                               dimension_names=tuple(dims), **options)
    if coords:
        array.attrs["coordinates"] = " ".join(coords)
    return array


def write_coordinate(group: zarr.Group, name: str, values: Sequence | np.ndarray,
                     dim: str | None = None) -> zarr.Array:
    """Write the 1-D coordinate ``name`` along ``dim`` (default: its own dimension), whole."""
    values = np.asarray(values)
    text = values.dtype.kind in "OUS"  # names and paths, however numpy or pandas hold them
    if values.dtype.kind == "S":
        values = values.astype(str)
    array = group.create_array(name, shape=values.shape, dtype=str if text else values.dtype,
                               dimension_names=(dim or name,), fill_value="" if text else 0)
    if values.size:
        array[...] = values
    return array


def write_image_coordinates(group: zarr.Group, images: ImageCoords, dim: str = "image") -> None:
    """``image`` (the ids) and the :data:`IMAGE_COORDS` of ``images`` along ``dim``."""
    write_coordinate(group, dim, images.ids)
    for name, values in zip(IMAGE_COORDS, (images.paths, images.labels, images.class_names),
                            strict=True):
        write_coordinate(group, name, values, dim)


def channel_names(count: int) -> tuple[str, ...]:
    """The ``channel`` coordinate of pictures of ``count`` channels (:data:`CHANNEL_NAMES`;
    ``c0``, ``c1``, ... for another count)."""
    return CHANNEL_NAMES.get(count, tuple(f"c{i}" for i in range(count)))


def write_range(group: zarr.Group, dim: str, size: int) -> None:
    """The coordinate of a counted dimension (unit, rank, top): 0 .. size-1."""
    write_coordinate(group, dim, np.arange(size, dtype=np.int32))

