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
chunks (one chunk per unit), on a thread while the next is projected and before the one after
starts: memory depends on the block, not on the number of units. The thumbnails and maps
come ready from a pass made before the blocks (:mod:`pipeline.interp.image_pass`); a batch's
own work besides its engine is cutting and scaling the tiles, a pass over them at a time for
the whole batch. After each block
``progress/<label>.json`` records how many units are written (and the batch size), so a killed
run continues at the next block. Blocks and batches follow from ``top_k`` and ``[deconv]
batch_size``, so a run resumed with the same batch size and device gives the arrays of an
uninterrupted run; with another batch size (say, smaller after running out of GPU memory) the
units still to do are batched differently, which changes the engine's rounding (not its
result) in the last bits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import zarr
from torch import nn
from zarr.codecs import ZstdCodec

from pipeline.atomic import remove
from pipeline.background import WritesBehind
from pipeline.data.decoded import DecodedImages
from pipeline.inference.store import store_layers
from pipeline.interp.image_pass import THUMB, ImagePass
from pipeline.interp.maps import map_extent
from pipeline.interp.projection_meta import ProjectedLayer, ProjectionPlan, ProjectionsMeta
from pipeline.interp.projector import Projector
from pipeline.interp.receptive_field import Box, ReceptiveField, field_crop, field_tile
from pipeline.labelled import (
    BOX_SIDES,
    FLAT_CHUNK_KEYS,
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
BLOCK_BATCHES = 4  # a block holds about this many engine batches of projections
# zstd level 1, not zarr's default 3: as small on these arrays (noisy float16 projections,
# photographs: 0.664 against 0.662 of the raw size on AlexNet's conv5) and twice as fast to
# compress, and writing them is one of the stage's largest costs besides its engine
COMPRESSOR = ZstdCodec(level=1)
DECODED = "decoded"  # scratch folder of the stage's decoded top images, inside the staged store
IMAGE_PASS = "image_pass"  # scratch folder of their thumbnails and maps (image_pass.py)


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
                           chunks=_unit_chunks(name, shape), compressors=COMPRESSOR,
                           chunk_key_encoding=FLAT_CHUNK_KEYS)
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
    """Drop the progress records, the decoded images, their thumbnails and maps (they are not
    part of the zarr tree)."""
    remove(path / "progress")
    remove(path / DECODED)
    remove(path / IMAGE_PASS)
    zarr.open_group(path, mode="r+").attrs.pop("plan", None)


class BlockProjector:
    """Projects, crops and writes the top activations of a layer, a block of units at a time."""

    def __init__(self, model: nn.Module, methods: Sequence[str], decoded: DecodedImages,
                 per_image: ImagePass, normalise: Callable[[torch.Tensor], torch.Tensor],
                 top_k: int, batch_size: int) -> None:
        self.decoded, self.per_image, self.normalise = decoded, per_image, normalise
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
        requests = Requests.of(rows)
        advance(int((requests.unit < done).sum()) * len(self.projectors))
        # a block is compressed and written while the next one is projected (zstd leaves the
        # GIL, and the engine leaves a core idle part of the time): at most one block waits
        with WritesBehind(1) as writes:
            for start in range(done, layer.channels, step):
                writes.check()  # a failed write stops the stage before another block's work
                stop = min(start + step, layer.channels)
                block = requests.take((requests.unit >= start) & (requests.unit < stop))
                arrays = self._block(block, layer, tile, start, stop - start, advance)
                writes.submit(_write_block, path, group, layer.label, arrays, start, stop,
                              self.batch_size)

    def _block(self, requests: Requests, layer: LayerPlan, tile: tuple[int, int], first: int,
               units: int, advance: Callable[[int], object]) -> dict[str, np.ndarray]:
        k, n, c = self.top_k, len(self.projectors), self.decoded.channels
        arrays: dict[str, np.ndarray] = {
            "projections": np.zeros((n, units, k, *tile, c), np.float16),
            "projection_scale": np.zeros((n, units, k), np.float32),
            "patches": np.full((units, k, *tile, c), PAD_GREY, np.uint8),
            "boxes": np.full((units, k, 4), -1, np.int32),
            "thumbs": np.full((units, k, THUMB, THUMB, c), PAD_GREY, np.uint8),
            "maps": self.per_image.maps(layer.label, first, first + units),
        }
        # by image, so that requests on one image meet in a batch and share its forward pass
        requests = requests.take(np.lexsort((requests.rank, requests.unit, requests.image_id)))
        for begin in range(0, len(requests), self.batch_size):
            batch = requests.take(slice(begin, begin + self.batch_size))
            self._batch(batch, layer, tile, first, arrays)
            advance(len(batch) * n)
        return arrays

    def _batch(self, batch: Requests, layer: LayerPlan, tile: tuple[int, int], first: int,
               arrays: dict[str, np.ndarray]) -> None:
        # each distinct image read and normalised once, and shared by its requests (they come
        # sorted by image: a batch holds a few images, each the top image of many units)
        ids, of_request = np.unique(batch.image_id, return_inverse=True)
        pixels = torch.from_numpy(self.decoded.read(ids))
        images = self.normalise(pixels.to(self.device))  # uint8 travels: a quarter the bytes
        image_of = torch.from_numpy(of_request).to(self.device)
        units = torch.from_numpy(batch.unit).to(self.device)
        positions = torch.from_numpy(np.stack([batch.y, batch.x], axis=1)).to(self.device)
        projected = [p.project(images, layer.module, units, positions, image_of).cpu().numpy()
                     for p in self.projectors]
        # an image unreadable since the activations stage read it is left blank
        keep = np.flatnonzero(self.decoded.readable(batch.image_id))
        if not len(keep):
            return
        unit, rank = batch.unit[keep] - first, batch.rank[keep]
        boxes = [layer.field.box(int(y), int(x)) for y, x in zip(batch.y[keep], batch.x[keep],
                                                                  strict=True)]
        for m, values in enumerate(projected):
            _store_scaled(values, keep, boxes, tile, arrays["projections"][m],
                          arrays["projection_scale"][m], unit, rank)
        hwc = pixels.permute(0, 2, 3, 1).numpy()
        for j, box in enumerate(boxes):
            arrays["patches"][unit[j], rank[j]] = field_tile(hwc[of_request[keep[j]]], box, tile,
                                                             PAD_GREY)
        arrays["boxes"][unit, rank] = boxes
        arrays["thumbs"][unit, rank] = self.per_image.thumbs(batch.image_id[keep])


def _write_block(path: Path, group: zarr.Group, label: str, arrays: dict[str, np.ndarray],
                 start: int, stop: int, batch_size: int) -> None:
    """Units ``start`` to ``stop`` of every array, then the progress record that says so (a run
    killed before the record projects the block again)."""
    for name, values in arrays.items():
        # every chunk written, not first compared with the fill value (a third of the writing
        # time): a chunk all fill value is a unit with no top images, rare
        array = array_in(group, name).with_config({"write_empty_chunks": True})
        if name == "projections" or name == "projection_scale":
            array[:, start:stop] = values
        else:
            array[start:stop] = values
    record_units(path, label, stop, batch_size)


def _store_scaled(projected: np.ndarray, which: np.ndarray, boxes: Sequence[Box],
                  tile: tuple[int, int], tiles: np.ndarray, scales: np.ndarray,
                  units: np.ndarray, ranks: np.ndarray) -> None:
    """Store the receptive-field tiles of projections ``which`` (``[n, C, H, W]``, one box
    each) at ``tiles[units[j], ranks[j]]``, each divided by its largest absolute value, and
    those values at ``scales[units[j], ranks[j]]``; NaN and infinities count as zeros. Only the
    part of a tile inside the image is written: ``tiles`` and ``scales`` must hold zeros (+0.0)
    there, which the padding and an all-zero tile keep (scale 0). This runs on every
    projection: it reads each crop in place, twice for its extremes and once to scale it into
    float16 (the float32 quotient rounded, as a float32 tile assigned to float16 would be)."""
    for j, (i, box) in enumerate(zip(which, boxes, strict=True)):
        (source_y, source_x), (tile_y, tile_x) = field_crop(projected.shape[2:], box, tile)
        crop = projected[i, :, source_y, source_x]
        if not crop.size:
            continue
        high, low = crop.max(), crop.min()
        if not (np.isfinite(high) and np.isfinite(low)):  # rare: zero them in a copy
            crop = np.nan_to_num(crop, nan=0.0, posinf=0.0, neginf=0.0)
            high, low = crop.max(), crop.min()
        peak = np.maximum(high, -low)  # max |crop|, float32
        if peak > 0:
            np.divide(crop.transpose(1, 2, 0), peak, casting="unsafe",
                      out=tiles[units[j], ranks[j], tile_y, tile_x])
            scales[units[j], ranks[j]] = peak


@dataclass(frozen=True)
class Requests:
    """Projection requests (rows of rank's table) as arrays: for each, the unit, its rank, the
    image and the position (y, x) in the unit's map. Arrays, not the frame: a layer is cut into
    hundreds of batches, and a frame's indexing costs more than the batch's bookkeeping."""

    unit: np.ndarray
    rank: np.ndarray
    image_id: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def of(cls, rows: pd.DataFrame) -> Requests:
        """The requests of ``rows`` (columns unit, rank, image_id, y, x), in their order."""
        return cls(*(rows[name].to_numpy(np.int64) for name in ("unit", "rank", "image_id",
                                                                "y", "x")))

    def __len__(self) -> int:
        return len(self.unit)

    def take(self, which: np.ndarray | slice) -> Requests:
        """The requests ``which`` selects (a mask, indices or a slice)."""
        return Requests(self.unit[which], self.rank[which], self.image_id[which], self.y[which],
                        self.x[which])
