"""Writing ``projections.zarr``: every unit's top activations projected, block by block.

The store keeps the engine's exact output, not display images, so the atlas's contrast and
encoding can change without projecting again. Per layer group:

- ``projections`` float16 ``[method, unit, rank, tile_y, tile_x, channel]``: each projection
  divided by its own largest absolute value (so float16 neither underflows nor overflows,
  whatever the network's scale), and ``projection_scale`` float32 ``[method, unit, rank]``,
  that value: the projection is ``projections * projection_scale``; zero outside the image;
- ``patches`` uint8 ``[unit, rank, tile_y, tile_x, channel]``, the same box of the input;
- ``boxes`` int32 ``[unit, rank, side]`` (top, left, bottom, right; -1: no image);
- ``thumbs`` uint8 ``[unit, rank, thumb_y, thumb_x, channel]``, the whole network input, 64 px;
- ``maps`` float32 ``[unit, rank, map_y, map_x]``, the unit's whole activation map in that
  image, and the attribute ``map_extent``, the input area the map covers (see
  ``pipeline.interp.maps``).

``channel`` is the network's input channels as the images were converted for it
(:func:`pipeline.data.images.as_channels`): ``grey`` alone, ``r g b``, or ``r g b a``; the
atlas turns them into something to look at (:mod:`pipeline.atlas.channels`).

The brackets are the arrays' zarr ``dimension_names``; the group holds their coordinates
(:mod:`pipeline.labelled`): ``method`` (names), ``unit``, ``rank``, ``side`` and ``channel``, and
per unit and rank the top image's ``image_id``, ``path``, ``label`` and ``class_name`` (-1 and
empty where a unit has fewer top images), written when the store is created from rank's table.

Attributes, each written and read through a record of :mod:`pipeline.interp.projection_meta`:
each layer group's ``ProjectedLayer``, the root's ``ProjectionsMeta`` (methods, image size,
device), and while the store is being written its ``ProjectionPlan`` (removed when finished).
The number of ranks per unit is not among them: it is the rank stage's ``top_k``
(:func:`pipeline.ranking.read_rank_meta`), the one record of it after rank.

Why blocks: a VGG16 layer's arrays are about a gigabyte, so a layer is never held whole. Units
are taken a block at a time (``block_units`` of them, a fixed number of projections), their
requests sorted by image so the engine shares forward passes, and the block is written as whole
chunks (one chunk per unit) before the next starts: memory depends on the block, not on the
number of units. After each block ``progress/<label>.json`` records how many units are written
(and the batch size), so a killed run continues at the next block. Blocks and batches follow
from ``top_k`` and ``[deconv] batch_size``, so a run resumed with the same batch size and device
gives the arrays of an uninterrupted run; with another batch size (say, smaller after running
out of GPU memory) the units still to do are batched differently, which changes the engine's
rounding (not its result) in the last bits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import zarr
from torch import nn

from pipeline.atomic import remove
from pipeline.data.decoded import DecodedImages
from pipeline.inference.store import store_layers
from pipeline.interp.maps import feature_maps, map_extent
from pipeline.interp.projection_meta import ProjectedLayer, ProjectionPlan, ProjectionsMeta
from pipeline.interp.projector import Projector
from pipeline.interp.receptive_field import ReceptiveField, field_tile
from pipeline.labelled import (
    BOX_SIDES,
    ImageCoords,
    array_in,
    channel_names,
    group_in,
    labelled_array,
    write_coordinate,
    write_range,
)
from pipeline.progress import record_units, units_written

#: the coordinates that say, per unit and rank, which image a picture is of
TOP_IMAGE_COORDS = ("image_id", "path", "label", "class_name")
PAD_GREY = 128  # patches are padded with the grey that marks zero in a shown projection
THUMB = 64  # side of the whole-image thumbnails the atlas draws receptive-field boxes on
BLOCK_BATCHES = 4  # a block holds about this many engine batches of projections
DECODED = "decoded"  # scratch folder of the stage's decoded top images, inside the staged store


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the store: its label, module, map shape and receptive field."""

    label: str
    module: str
    channels: int
    map_hw: tuple[int, int]
    field: ReceptiveField


def layer_plans(activations: zarr.Group, fields: dict[str, ReceptiveField],
                units: int | None = None) -> list[LayerPlan]:
    """The layers the activations store recorded, in its order (``units``: only the first
    that many of each, as the memory benchmark asks)."""
    return [LayerPlan(meta.label, meta.module,
                      meta.channels if units is None else min(units, meta.channels),
                      (meta.height, meta.width), fields[meta.module])
            for meta in store_layers(activations)]


def block_units(top_k: int, batch_size: int) -> int:
    """Units per block: about ``BLOCK_BATCHES`` engine batches of projections (at least one)."""
    return max(1, BLOCK_BATCHES * batch_size // max(1, top_k))


def create_store(path: Path, layers: Sequence[LayerPlan], plan: ProjectionPlan,
                 device: str, topk: pd.DataFrame, images: ImageCoords,
                 channels: int = 3) -> zarr.Group:
    """Create every layer's arrays up front (unwritten chunks read as the fill values: grey
    patches, boxes -1, zero projections) with their coordinates (``topk``: rank's table;
    ``images``: the run's), pictures of ``channels`` channels, or open what a killed run of
    the same plan made."""
    meta = ProjectionsMeta(plan.methods, plan.image_size, device)
    if (path / "zarr.json").exists():
        existing = zarr.open_group(path, mode="r+")
        # the plan is set last: a store cut off while created has none and is redone
        attrs: Mapping[str, Any] = existing.attrs  # JSON values
        if "plan" in attrs and ProjectionPlan.from_attrs(attrs["plan"]) == plan and \
                _stored_channels(existing, plan.layers) in (None, channels):
            existing.attrs.update(meta.to_attrs())  # this run's device (a resumed run may
            return existing  # run on another one)
    remove(path)
    root = zarr.open_group(path, mode="w")
    image_size, methods = plan.image_size, plan.methods
    for layer in layers:
        tile = layer.field.tile_hw((image_size, image_size))
        units, k, n = layer.channels, plan.top_k, len(methods)
        group = root.create_group(layer.label)
        group.attrs.update(ProjectedLayer(layer.module, tile, layer.field.size,
                                          tuple(methods),
                                          tuple(map_extent(layer.field, layer.map_hw))
                                          ).to_attrs())
        _write_coordinates(group, topk[topk["layer"] == layer.label], images, methods, units, k,
                           channels)
        c = channels
        for name, dims, shape, dtype, fill in (
                ("projections", ("method", "unit", "rank", "tile_y", "tile_x", "channel"),
                 (n, units, k, *tile, c), "float16", 0),
                ("projection_scale", ("method", "unit", "rank"), (n, units, k), "float32", 0),
                ("patches", ("unit", "rank", "tile_y", "tile_x", "channel"), (units, k, *tile, c),
                 "uint8", PAD_GREY),
                ("boxes", ("unit", "rank", "side"), (units, k, 4), "int32", -1),
                ("thumbs", ("unit", "rank", "thumb_y", "thumb_x", "channel"),
                 (units, k, THUMB, THUMB, c), "uint8", PAD_GREY),
                ("maps", ("unit", "rank", "map_y", "map_x"), (units, k, *layer.map_hw),
                 "float32", 0)):
            labelled_array(group, name, dims, shape, dtype, TOP_IMAGE_COORDS, fill_value=fill,
                           chunks=_unit_chunks(name, shape))
    root.attrs.update(meta.to_attrs())
    root.attrs["plan"] = plan.to_attrs()
    return root


def _stored_channels(store: zarr.Group, labels: Sequence[str]) -> int | None:
    """The channels of the pictures a store holds (None: it holds no layer)."""
    if not labels or labels[0] not in store:
        return None
    return int(array_in(group_in(store, labels[0]), "patches").shape[-1])


def _write_coordinates(group: zarr.Group, rows: pd.DataFrame, images: ImageCoords,
                       methods: Sequence[str], units: int, k: int, channels: int) -> None:
    """The layer group's coordinates: its dimensions', and who each unit's top images are."""
    write_coordinate(group, "method", np.asarray(methods, dtype=str))
    write_range(group, "unit", units)
    write_range(group, "rank", k)
    write_coordinate(group, "side", np.asarray(BOX_SIDES, dtype=str))
    write_coordinate(group, "channel", np.asarray(channel_names(channels), dtype=str))
    rows = rows[rows["unit"] < units]
    ids = np.full((units, k), -1, np.int64)
    ids[rows["unit"].to_numpy(), rows["rank"].to_numpy()] = rows["image_id"].to_numpy()
    found = ids >= 0
    columns = {"image_id": ids, "path": np.full((units, k), "", dtype=object),
               "label": np.full((units, k), -1, np.int32),
               "class_name": np.full((units, k), "", dtype=object)}
    for name, values in (("path", images.paths), ("label", images.labels),
                         ("class_name", images.class_names)):
        columns[name][found] = values[ids[found]]
    for name, values in columns.items():
        text = values.dtype == object
        array = group.create_array(name, shape=(units, k), dtype=str if text else values.dtype,
                                   dimension_names=("unit", "rank"),
                                   fill_value="" if text else -1)
        array[...] = values


def _unit_chunks(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """One chunk per unit (and method) of the pictures: the atlas reads a unit at a time. The
    small arrays (boxes, scales) are one chunk each: thousands of 100-byte files help nobody."""
    if name in ("boxes", "projection_scale"):
        return shape
    if name == "projections":
        return (1, 1, *shape[2:])
    return (1, *shape[1:])


def finish_store(path: Path) -> None:
    """Drop the progress records and the decoded images (they are not part of the zarr tree)."""
    remove(path / "progress")
    remove(path / DECODED)
    zarr.open_group(path, mode="r+").attrs.pop("plan", None)


class BlockProjector:
    """Projects, crops and writes the top activations of a layer, a block of units at a time."""

    def __init__(self, model: nn.Module, methods: Sequence[str], decoded: DecodedImages,
                 normalise: Callable[[torch.Tensor], torch.Tensor], top_k: int,
                 batch_size: int) -> None:
        self.model, self.decoded, self.normalise = model, decoded, normalise
        self.projectors = [Projector(model, method=method, batch_size=batch_size)
                           for method in methods]
        self.top_k, self.batch_size = top_k, batch_size
        self.device = next(model.parameters()).device

    def layer(self, path: Path, layer: LayerPlan, rows: pd.DataFrame,
              advance: Callable[[int], object] = lambda n: None) -> None:
        """Write layer ``layer``'s arrays from its top-k ``rows`` (unit, rank, image_id, y, x),
        continuing after the units a killed run finished."""
        group = group_in(zarr.open_group(path, mode="r+"), layer.label)
        tile = ProjectedLayer.from_attrs(group.attrs).tile
        step = block_units(self.top_k, self.batch_size)
        done = units_written(path, layer.label)
        advance(int((rows["unit"] < done).sum()) * len(self.projectors))
        for start in range(done, layer.channels, step):
            stop = min(start + step, layer.channels)
            block = rows[(rows["unit"] >= start) & (rows["unit"] < stop)]
            arrays = self._block(block, layer, tile, start, stop - start, advance)
            for name, values in arrays.items():
                if name == "projections" or name == "projection_scale":
                    array_in(group, name)[:, start:stop] = values
                else:
                    array_in(group, name)[start:stop] = values
            record_units(path, layer.label, stop, self.batch_size)

    def _block(self, rows: pd.DataFrame, layer: LayerPlan, tile: tuple[int, int], first: int,
               units: int, advance: Callable[[int], object]) -> dict[str, np.ndarray]:
        k, n, c = self.top_k, len(self.projectors), self.decoded.channels
        arrays: dict[str, np.ndarray] = {
            "projections": np.zeros((n, units, k, *tile, c), np.float16),
            "projection_scale": np.zeros((n, units, k), np.float32),
            "patches": np.full((units, k, *tile, c), PAD_GREY, np.uint8),
            "boxes": np.full((units, k, 4), -1, np.int32),
            "thumbs": np.full((units, k, THUMB, THUMB, c), PAD_GREY, np.uint8),
            "maps": np.zeros((units, k, *layer.map_hw), np.float32),
        }
        rows = rows.sort_values(["image_id", "unit", "rank"], ignore_index=True)
        for begin in range(0, len(rows), self.batch_size):
            batch = rows.iloc[begin:begin + self.batch_size]
            self._batch(batch, layer, tile, first, arrays)
            advance(len(batch) * n)
        return arrays

    def _batch(self, batch: pd.DataFrame, layer: LayerPlan, tile: tuple[int, int], first: int,
               arrays: dict[str, np.ndarray]) -> None:
        ids = batch["image_id"].to_numpy()
        distinct, inverse = np.unique(ids, return_inverse=True)
        pixels = torch.from_numpy(self.decoded.read(distinct))
        decoded = self.normalise(pixels.to(self.device))  # uint8 travels: a quarter the bytes
        which = torch.from_numpy(inverse).to(self.device)
        units = torch.tensor(batch["unit"].to_numpy(), dtype=torch.long)
        positions = torch.tensor(batch[["y", "x"]].to_numpy(), dtype=torch.long)
        fmaps = feature_maps(self.model, decoded, layer.module)
        maps = fmaps[which, units.to(self.device)].float().cpu().numpy()
        projected = [p.project(decoded[which], layer.module, units.to(self.device),
                               positions.to(self.device)).cpu().numpy()
                     for p in self.projectors]
        small = (F.interpolate(pixels.float() / 255, size=(THUMB, THUMB), mode="bilinear",
                               antialias=True, align_corners=False).clamp(0, 1) * 255) \
            .round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        hwc = pixels.permute(0, 2, 3, 1).numpy()
        readable = self.decoded.readable(distinct)
        for j, row in enumerate(batch.itertuples(index=False)):
            image = int(inverse[j])
            if not readable[image]:  # unreadable since the activations stage read it
                continue
            unit, rank = int(row.unit) - first, int(row.rank)
            box = layer.field.box(int(row.y), int(row.x))
            for m, values in enumerate(projected):
                crop = np.nan_to_num(field_tile(values[j].transpose(1, 2, 0), box, tile, 0.0),
                                     nan=0.0, posinf=0.0, neginf=0.0)
                peak = float(np.abs(crop).max())
                if peak > 0:
                    arrays["projections"][m, unit, rank] = crop / peak
                    arrays["projection_scale"][m, unit, rank] = peak
            arrays["patches"][unit, rank] = field_tile(hwc[image], box, tile, PAD_GREY)
            arrays["boxes"][unit, rank] = box
            arrays["thumbs"][unit, rank] = small[image]
            arrays["maps"][unit, rank] = maps[j]
