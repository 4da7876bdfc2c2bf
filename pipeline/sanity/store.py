"""What the sanity stage writes, and the reader of ``sanity.zarr``.

- ``sanity.parquet``: the cascade, one row per layer, method and step
  (:data:`pipeline.sanity.sanity_run.CASCADE_COLUMNS`): ``step`` 1 randomises the top of the
  network down to ``randomised_from`` (a module name; ``randomised_label`` the analysed layer
  it computes, '' below them all), each next step one analysed layer further down, and the
  row with ``full`` true is every weighted module randomised, the headline figure. Spearman's
  and SSIM's mean and standard deviation over ``n`` compared projections; ``empty`` counts the
  randomised projections that came out all zero (left out of the means).
- ``input_dependence.parquet``: one row per layer and method
  (:data:`pipeline.sanity.inputs.INPUT_COLUMNS`).
- ``sanity.zarr``: per layer label, every live unit's top-1 activation projected under full
  randomisation, cropped as ``projections.zarr`` crops it: ``projections`` float16
  ``[method, unit, tile_y, tile_x, channel]`` (each divided by its largest absolute value) and
  ``projection_scale`` float32 ``[method, unit]`` (the projection is their product; 0: a dead
  unit, or an empty projection), ``image_id`` ``[unit]`` (-1: dead), with the coordinates
  ``method``, ``unit`` and ``channel``; the root's attributes are a :class:`SanityMeta`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr

from pipeline.labelled import (
    FLAT_CHUNK_KEYS,
    array_in,
    channel_names,
    group_in,
    labelled_array,
    write_coordinate,
    write_range,
)
from pipeline.metadata import Metadata
from pipeline.schemas import InputDependence, Sanity

if TYPE_CHECKING:  # the atlas reads this module's reader without importing torch
    import pandas as pd

    from pipeline.interp.projection_store import LayerPlan
    from pipeline.sanity.sanity_run import CascadeResult


@dataclass(frozen=True)
class SanityMeta(Metadata):
    """``sanity.zarr``'s root attributes: the methods, the seed of the new weights, the side
    of the network's input, and the cascade's steps (the module each goes down to, top first)."""

    methods: tuple[str, ...]
    seed: int
    image_size: int
    steps: tuple[str, ...]


def write_randomised(path: Path, result: CascadeResult, layers: Sequence[LayerPlan],
                     meta: SanityMeta, channels: int) -> None:
    """Write ``sanity.zarr`` at ``path`` (module doc); a layer without any live unit gets
    zeros."""
    root = zarr.open_group(path, mode="w")
    for layer in layers:
        tile = layer.field.tile_hw((meta.image_size, meta.image_size))
        n, units = len(meta.methods), layer.channels
        arrays = result.randomised.get(layer.label, {
            "projections": np.zeros((n, units, *tile, channels), np.float16),
            "projection_scale": np.zeros((n, units), np.float32),
            "image_id": np.full(units, -1, np.int64)})
        group = root.create_group(layer.label)
        group.attrs.update({"module": layer.module, "tile": list(tile)})
        write_coordinate(group, "method", np.asarray(meta.methods, dtype=str))
        write_range(group, "unit", units)
        write_coordinate(group, "channel", np.asarray(channel_names(channels), dtype=str))
        for name, dims in (("projections", ("method", "unit", "tile_y", "tile_x", "channel")),
                           ("projection_scale", ("method", "unit")), ("image_id", ("unit",))):
            values = arrays[name]
            chunks = (1, 1, *values.shape[2:]) if name == "projections" else values.shape
            array = labelled_array(group, name, dims, values.shape, values.dtype,
                                   chunks=chunks, fill_value=-1 if name == "image_id" else 0,
                                   chunk_key_encoding=FLAT_CHUNK_KEYS)
            if name == "projections":
                # a chunk at a time: zarr writes the chunks of one assignment concurrently, and
                # when the disk fills one of them fails while the others still run, which
                # leaves a traceback on stderr after the stage's one-line error
                for index in np.ndindex(*values.shape[:2]):
                    array[index] = values[index]
            else:
                array[...] = values
    root.attrs.update(meta.to_attrs())


def write_tables(cascade: pd.DataFrame, cascade_path: Path, inputs: pd.DataFrame,
                 inputs_path: Path) -> None:
    """Write the two tables (module doc)."""
    Sanity.write(cascade, cascade_path)
    InputDependence.write(inputs, inputs_path)


class RandomisedProjections:
    """Reads ``sanity.zarr``: a unit's top-1 projection under full randomisation."""

    def __init__(self, path: Path) -> None:
        self.root = zarr.open_group(path, mode="r")
        self.meta = SanityMeta.from_attrs(self.root.attrs)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(sorted(self.root.group_keys()))

    def projection(self, layer: str, method: str, unit: int) -> np.ndarray | None:
        """The projection ``[tile_y, tile_x, channel]`` float32 (None: a dead unit, or a
        method or layer the store does not hold)."""
        if layer not in self.root or method not in self.meta.methods:
            return None
        group = group_in(self.root, layer)
        if int(np.asarray(array_in(group, "image_id")[unit])) < 0:
            return None
        m = self.meta.methods.index(method)
        scale = float(np.asarray(array_in(group, "projection_scale")[m, unit]))
        return np.asarray(array_in(group, "projections")[m, unit], dtype=np.float32) * scale

    def image_id(self, layer: str, unit: int) -> int:
        """The image the unit's projection is of (its top-1), -1 for a dead unit."""
        return int(np.asarray(array_in(group_in(self.root, layer), "image_id")[unit]))
