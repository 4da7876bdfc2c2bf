"""Writing ``featurevis.zarr``: each unit's optimised images, a block of units at a time.

Per layer group (``<label>``), for the units optimised (all of the layer's, or ``[featurevis]
units`` of them picked as the atlas's index strips pick them):

- ``unit`` int32 ``[unit]``: the coordinate, the units' numbers in the layer (ascending);
- ``images`` uint8 ``[unit, y, x, channel]``: the image that maximises the unit's mean over its
  whole feature map, at the network's input size (the ``mean`` objective);
- ``centre`` uint8 ``[unit, centre_y, centre_x, channel]``: the image, the size of the unit's
  receptive field, that maximises its activation at the map cell centred on it (``centre``);
- ``value``, ``peak``, ``start`` float32 ``[objective, unit]``: the objective on the stored image,
  the largest activation of the unit's map on it, and the objective on the random initial image;
- ``data_peak`` float32 ``[unit]``: the unit's largest activation over the data set (the rank
  stage's ``units.parquet``), what ``peak`` is read against;
- ``driven`` bool ``[objective, unit]``: whether the optimisation raised the unit at all (its
  objective ended above where it started). Not driven: the unit is where it started after the
  last step (zero, for a ReLU), so its image shows nothing that drives it and is not drawn. A
  dead ReLU (zero whatever the input) is never driven; a unit slow to start may not be yet by
  one objective within ``steps`` and be by the other.

The images are what the atlas shows, 8 bits per channel, exactly (it writes them losslessly);
``value`` and ``peak`` are measured on those 8-bit images, with no transform. Attributes: the
root's :class:`~pipeline.featurevis.meta.FeatureVisMeta`, each group's
:class:`~pipeline.featurevis.meta.FeatureVisLayer`, and while the store is written its
:class:`~pipeline.featurevis.meta.FeatureVisPlan`.

Blocks: ``[featurevis] batch_size`` units are optimised together and written as whole chunks
(one per unit) before the next block starts; ``progress/<label>.json`` then says how many are
written, so a killed run continues at the next block. Each unit's image is drawn (its start
and its transforms) by a generator of its own, seeded by the seed, the layer, the unit and the
objective, so a resumed run writes the bytes of an uninterrupted one; with another batch size,
equal up to the rounding of batched convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.atomic import remove
from pipeline.featurevis.meta import FeatureVisLayer, FeatureVisMeta, FeatureVisPlan
from pipeline.labelled import array_in, channel_names, group_in, labelled_array, write_coordinate
from pipeline.progress import units_written

#: the arrays of one block, by name (see the module doc)
Block = dict[str, np.ndarray]
UNIT_FIRST = ("images", "centre")  # the arrays along ``unit`` first; the others: objective


@dataclass(frozen=True)
class VisLayer:
    """One layer to optimise: its label and module, the units (numbers), the centre
    objective's input side, map cell and the receptive field; how often the model calls the
    module per forward pass (0: unknown, run it whole; see ``Truncated``)."""

    label: str
    module: str
    units: tuple[int, ...]
    side: int
    position: tuple[int, int]
    receptive_field: tuple[int, int]
    calls: int = 1


def create_store(path: Path, layers: Sequence[VisLayer], plan: FeatureVisPlan,
                 meta: FeatureVisMeta, data_peaks: dict[str, np.ndarray]) -> zarr.Group:
    """Create every layer's arrays (``data_peaks``: per layer, its units' largest activation
    on the data), or open what a killed run of the same plan made."""
    if (path / "zarr.json").exists():
        existing = zarr.open_group(path, mode="r+")
        if "plan" in existing.attrs and \
                FeatureVisPlan.from_attrs(existing.attrs["plan"]) == plan:  # type: ignore[arg-type]
            existing.attrs.update(meta.to_attrs())  # this run's device
            return existing
    remove(path)
    root = zarr.open_group(path, mode="w")
    size, c = plan.input_size, plan.channels
    for layer in layers:
        group = root.create_group(layer.label)
        group.attrs.update(FeatureVisLayer(layer.module, layer.side, layer.position,
                                           layer.receptive_field).to_attrs())
        n = len(layer.units)
        write_coordinate(group, "unit", np.asarray(layer.units, dtype=np.int32))
        write_coordinate(group, "objective", np.asarray(meta.objectives, dtype=str))
        write_coordinate(group, "channel", np.asarray(channel_names(c), dtype=str))
        data_peak = labelled_array(group, "data_peak", ("unit",), (n,), "float32")
        data_peak[...] = data_peaks[layer.label].astype(np.float32)
        for name, dims, shape, dtype, fill in (
                ("images", ("unit", "y", "x", "channel"), (n, size, size, c), "uint8", 128),
                ("centre", ("unit", "centre_y", "centre_x", "channel"),
                 (n, layer.side, layer.side, c), "uint8", 128),
                ("value", ("objective", "unit"), (2, n), "float32", 0),
                ("peak", ("objective", "unit"), (2, n), "float32", 0),
                ("start", ("objective", "unit"), (2, n), "float32", 0),
                ("driven", ("objective", "unit"), (2, n), "bool", False)):
            chunks = (1, *shape[1:]) if dims[0] == "unit" else shape
            labelled_array(group, name, dims, shape, dtype, fill_value=fill, chunks=chunks)
    root.attrs.update(meta.to_attrs())
    root.attrs["plan"] = plan.to_attrs()
    return root


def write_block(path: Path, label: str, start: int, block: Block) -> None:
    """Write units ``start ..`` of layer ``label`` (positions along ``unit``)."""
    group = group_in(zarr.open_group(path, mode="r+"), label)
    stop = start + len(block["images"])
    for name, values in block.items():
        if name in UNIT_FIRST:
            array_in(group, name)[start:stop] = values
        else:
            array_in(group, name)[:, start:stop] = values


def finish_store(path: Path) -> None:
    """Drop the progress records and the plan."""
    remove(path / "progress")
    zarr.open_group(path, mode="r+").attrs.pop("plan", None)


__all__ = ["Block", "VisLayer", "create_store", "finish_store", "units_written", "write_block"]
