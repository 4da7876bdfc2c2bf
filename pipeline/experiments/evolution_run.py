"""Figure 4: how each unit's strongest activation changes over training.

For every snapshot (the weights kept at ``[train] snapshot_epochs``, or the files of
``[evolution] checkpoints``), one forward pass over the searched images finds, per layer and
unit, its largest activation and where it is; that one activation is then projected to pixel
space with the deconvnet and cropped to the unit's receptive field, as the deconv stage does for
the top images. Ties go to the lowest image id, then to the first position in row-major order,
so the same weights and images always pick the same activation. The searched images are
decoded once, in parallel, into the store's scratch folder, and read back for every snapshot;
one snapshot's model is on the device at a time.

``evolution.zarr`` (attrs ``snapshots``: the labels, ``layers``, ``image_size``, ``n_images``:
how many images were searched) holds per layer group (attrs ``module``, ``tile`` [h, w],
``receptive_field`` [h, w]), with S snapshots and C units:

- ``value`` float32 ``[S, C]``: the unit's largest activation over the searched images;
  a unit whose largest activation is not above zero is *silent* at that snapshot;
- ``image_id`` int64 ``[S, C]``: the manifest row of that image, ``y``, ``x`` int32 ``[S, C]``:
  the position in the layer's map (all -1 for a silent unit);
- ``projections`` float16 ``[S, C, h, w, K]``: the projection, cropped to the receptive field
  and divided by its own largest absolute value, ``projection_scale`` float32 ``[S, C]`` that
  value (the projection is ``projections * projection_scale``; zero for a silent unit);
- ``patches`` uint8 ``[S, C, h, w, K]``: the same box of the preprocessed image (mid-grey
  outside the image and for a silent unit).

K is the network's input channels (grey; r, g, b; or r, g, b, a).

Their zarr ``dimension_names`` are ``snapshot``, ``unit``, ``tile_y``, ``tile_x``, ``channel``;
each group holds the coordinates (:mod:`pipeline.labelled`): ``snapshot`` (the labels), ``unit`` and
``channel``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.interp.display import GREY
from pipeline.metadata import Metadata

if TYPE_CHECKING:
    from pipeline.data.decoded import DecodedImages

DECODED = "decoded"  # the searched images' crops, inside the store while it is written


@dataclass(frozen=True)
class EvolutionMeta(Metadata):
    """``evolution.zarr``'s root attributes: the snapshots' labels, the layers' labels, the
    side of the network's input and how many images were searched."""

    snapshots: tuple[str, ...]
    layers: tuple[str, ...]
    image_size: int
    n_images: int


@dataclass(frozen=True)
class EvolutionLayerMeta(Metadata):
    """A layer group's attributes: its module, the projections' tile and receptive field."""

    module: str
    tile: tuple[int, int]
    receptive_field: tuple[int, int]


@dataclass(frozen=True)
class EvolutionLayer:
    """One analysed layer, as the activations store describes it."""

    label: str
    module: str
    channels: int
    width: int  # of the layer's map: turns a flat argmax into (y, x)


@dataclass
class Maxima:
    """Each unit's largest activation over the searched images at one snapshot, ``[C]`` each."""

    value: np.ndarray  # float32
    image_id: np.ndarray  # int64, -1 when silent
    y: np.ndarray  # int32, -1 when silent
    x: np.ndarray  # int32, -1 when silent

    @property
    def live(self) -> np.ndarray:
        """The units that fired at this snapshot."""
        return self.image_id >= 0


def searched_images(readable: np.ndarray, count: int) -> np.ndarray:
    """Ids of the images searched: every readable one, or ``count`` of them evenly spaced (the
    same ones every run), in increasing order."""
    ids = np.flatnonzero(np.asarray(readable, bool))
    if count <= 0 or count >= len(ids):
        return ids
    return ids[((np.arange(count) + 0.5) * len(ids) / count).astype(np.int64)]


def image_batches(pixels: Callable[[np.ndarray], np.ndarray],
                  normalise: Callable[[Tensor], Tensor], ids: np.ndarray, batch_size: int,
                  device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images [B, K, H, W], ids [B])`` on ``device``, in the order of ``ids``: the ``uint8``
    crops ``pixels(batch_ids)`` (``[B, K, H, W]``) travel to the device (pinned, without
    waiting, on CUDA: a quarter of float32's bytes) and are normalised there."""
    cuda = device.type == "cuda"
    for start in range(0, len(ids), batch_size):
        batch_ids = ids[start:start + batch_size]
        crops = torch.from_numpy(pixels(batch_ids))
        if cuda:
            crops = crops.pin_memory()
        yield (normalise(crops.to(device, non_blocking=cuda)),
               torch.as_tensor(batch_ids, dtype=torch.long).to(device, non_blocking=cuda))


def strongest_activations(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                          layers: Sequence[EvolutionLayer]) -> dict[str, Maxima]:
    """Each layer's (by label) :class:`Maxima` of ``model`` over ``batches``, which must come
    in increasing image id order (that is how ties go to the lowest id). The running maxima
    stay on the device: one copy to the host at the end, no wait per batch."""
    from pipeline.inference.recorder import SummaryRecorder
    from pipeline.models.pooling import shifted_max_pooling

    modules = [layer.module for layer in layers]
    found: dict[str, list[Tensor]] = {}
    device = next(model.parameters(), torch.empty(0)).device
    with SummaryRecorder(model, modules) as recorder, torch.inference_mode(), \
            shifted_max_pooling(device):
        for images, ids in batches:
            model(images)
            for layer in layers:
                summary = recorder.summaries[layer.module]
                _keep_larger(found, layer.label, summary.max, summary.argmax, ids)
    return {layer.label: _maxima(found.get(layer.label), layer) for layer in layers}


def _keep_larger(found: dict[str, list[Tensor]], label: str, peaks: Tensor, where: Tensor,
                 ids: Tensor) -> None:
    """Fold one batch's per-image maxima ``[B, C]`` into the running (value, id, flat) ``[C]``,
    keeping an earlier image on a tie (a later one must be strictly larger)."""
    peaks = torch.nan_to_num(peaks.float(), nan=-torch.inf)
    top = peaks.max(dim=0).values
    order = torch.arange(len(ids), device=peaks.device)[:, None].expand_as(peaks)
    first = torch.where(peaks == top, order, len(ids)).amin(dim=0)  # lowest image on a tie
    image = ids[first]
    flat = where.gather(0, first[None]).squeeze(0).long()
    if label not in found:
        found[label] = [top, image, flat]
        return
    value, best_image, best_flat = found[label]
    larger = top > value
    found[label] = [torch.where(larger, top, value), torch.where(larger, image, best_image),
                    torch.where(larger, flat, best_flat)]


def _maxima(found: list[Tensor] | None, layer: EvolutionLayer) -> Maxima:
    channels = layer.channels
    if found is None:  # no image searched: every unit silent
        value = np.zeros(channels, np.float32)
        image = np.full(channels, -1, np.int64)
        flat = np.zeros(channels, np.int64)
    else:
        value, image, flat = (t.cpu().numpy() for t in found)
        value = value.astype(np.float32)
    silent = ~(value > 0)  # also NaN: a diverged snapshot's unit shows nothing
    value = np.nan_to_num(value, nan=0.0, posinf=float(np.finfo(np.float32).max),
                          neginf=0.0).astype(np.float32)
    image = np.where(silent, -1, image).astype(np.int64)
    y = np.where(silent, -1, flat // layer.width).astype(np.int32)
    x = np.where(silent, -1, flat % layer.width).astype(np.int32)
    return Maxima(value, image, y, x)


@dataclass
class Projected:
    """One snapshot's projections of one layer's maxima (see the module doc)."""

    projections: np.ndarray  # float16 [C, h, w, K]
    scale: np.ndarray  # float32 [C]
    patches: np.ndarray  # uint8 [C, h, w, K]


def project_maxima(projector, maxima: Maxima, module: str, field, tile: tuple[int, int],
                   pixels: Callable[[np.ndarray], np.ndarray], k: int,
                   normalise: Callable[[Tensor], Tensor],
                   on_done: Callable[[int], None] = lambda n: None) -> Projected:
    """Project every live unit's maximum with ``projector`` (a deconvnet
    :class:`~pipeline.interp.Projector` of the snapshot's model), crop it and the image patch
    to the unit's receptive field box (``field.box``) in a ``tile`` and normalise it by its
    own peak. ``pixels(ids)`` gives the images' ``uint8`` crops ``[n, k, H, W]`` (the patches
    are those pixels), ``normalise`` makes the network input of them; ``on_done(n)`` counts
    progress."""
    from pipeline.interp import field_tile

    channels = len(maxima.value)
    device = next(projector.model.parameters()).device
    units = np.flatnonzero(maxima.live)
    units = units[np.argsort(maxima.image_id[units], kind="stable")]  # read each image once
    out = Projected(np.zeros((channels, *tile, k), np.float16), np.zeros(channels, np.float32),
                    np.full((channels, *tile, k), GREY, np.uint8))
    step = projector.batch_size
    for start in range(0, len(units), step):
        chunk = units[start:start + step]
        distinct, inverse = np.unique(maxima.image_id[chunk], return_inverse=True)
        crops = pixels(distinct)
        images = normalise(torch.from_numpy(crops).to(device))
        projected = projector.project(
            images[torch.from_numpy(inverse).to(device)], module,
            torch.from_numpy(chunk).to(device),
            torch.from_numpy(np.stack([maxima.y[chunk], maxima.x[chunk]], axis=1)).long()
            .to(device)).cpu().numpy()
        hwc = crops.transpose(0, 2, 3, 1)
        for j, unit in enumerate(chunk):
            box = field.box(int(maxima.y[unit]), int(maxima.x[unit]))
            crop = np.nan_to_num(field_tile(projected[j].transpose(1, 2, 0), box, tile, 0.0),
                                 nan=0.0, posinf=0.0, neginf=0.0)
            peak = float(np.abs(crop).max())
            if peak > 0:
                out.projections[unit] = crop / peak
                out.scale[unit] = peak
            out.patches[unit] = field_tile(hwc[inverse[j]], box, tile, GREY)
        on_done(len(chunk))
    return out


def write_evolution(path: Path, snapshots: Sequence[tuple[str, Callable[[], nn.Module]]],
                    layers: Sequence[EvolutionLayer],
                    decode: Callable[[Path], DecodedImages],
                    normalise: Callable[[Tensor], Tensor], ids: np.ndarray, image_size: int,
                    batch_size: int, device: torch.device) -> int:
    """Search the images ``ids`` with every snapshot (``(label, load)``: ``load()`` gives its
    model on ``device``, in eval mode), project each unit's maximum and write
    ``evolution.zarr`` at ``path`` (see the module doc).

    ``decode(folder)`` decodes the images once into a scratch ``folder`` inside the store (in
    parallel) and returns the :class:`~pipeline.data.decoded.DecodedImages` that read their
    ``uint8`` crops back by id (an image unreadable now is left out, and said); ``normalise``
    makes the network input of crops. One snapshot is
    on the device at a time: it searches the crops, projects its maxima and is dropped before
    the next loads (8 VGG16 snapshots would hold 4.4 GB). Returns how many images were
    searched."""
    import zarr

    from pipeline.atomic import remove
    from pipeline.interp import Projector, receptive_fields
    from pipeline.progress import progress_bar

    store = zarr.open_group(path, mode="w")
    labels = [label for label, _ in snapshots]
    decoded = decode(Path(path) / DECODED)
    pixels = decoded.read
    readable = decoded.readable(ids)
    if not readable.all():
        print(f"[evolution] warning: {int((~readable).sum())} of {len(ids)} searched images "
              "cannot be read now and are left out")
        ids = ids[readable]
    store.attrs.update(EvolutionMeta(tuple(labels), tuple(layer.label for layer in layers),
                                     image_size, len(ids)).to_attrs())
    bar = progress_bar("evolution", total=len(ids) * len(snapshots), unit="image")
    for s, (_, load) in enumerate(snapshots):
        model = load()
        if s == 0:
            fields = receptive_fields(model, (image_size, image_size))
            tiles = {layer.label: fields[layer.module].tile_hw((image_size, image_size))
                     for layer in layers}
            for layer in layers:
                _create_layer(store, layer, labels, tiles[layer.label], fields[layer.module],
                              decoded.channels)
        maxima = strongest_activations(
            model, _counted(image_batches(pixels, normalise, ids, batch_size, device), bar),
            layers)
        projector = Projector(model, method="deconvnet", batch_size=batch_size)
        for layer in layers:
            found = maxima[layer.label]
            result = project_maxima(projector, found, layer.module, fields[layer.module],
                                    tiles[layer.label], pixels, decoded.channels, normalise)
            _write_snapshot(store, layer.label, s, found, result)
        del model, projector
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next snapshot gets the memory this one held
    bar.close()
    remove(Path(path) / DECODED)
    return len(ids)


def _write_snapshot(store, label: str, s: int, found: Maxima, result: Projected) -> None:
    from pipeline.labelled import array_in, group_in

    group = group_in(store, label)
    for name, values in (("value", found.value), ("image_id", found.image_id),
                         ("y", found.y), ("x", found.x), ("projections", result.projections),
                         ("projection_scale", result.scale), ("patches", result.patches)):
        array_in(group, name)[s] = values


def _counted(batches: Iterator[tuple[Tensor, Tensor]], bar) -> Iterator[tuple[Tensor, Tensor]]:
    for images, ids in batches:
        yield images, ids
        bar.update(len(ids))


def _create_layer(store, layer: EvolutionLayer, snapshots: Sequence[str],
                  tile: tuple[int, int], field, k: int) -> None:
    """``layer``'s group, its arrays (pictures of ``k`` channels) and coordinates."""
    from pipeline.labelled import channel_names, labelled_array, write_coordinate, write_range

    group = store.create_group(layer.label)
    group.attrs.update(EvolutionLayerMeta(layer.module, (tile[0], tile[1]),
                                          (field.size[0], field.size[1])).to_attrs())
    s, c = len(snapshots), layer.channels
    write_coordinate(group, "snapshot", np.asarray(snapshots, dtype=str))
    write_range(group, "unit", c)
    write_coordinate(group, "channel", np.asarray(channel_names(k), dtype=str))
    # One chunk per snapshot (and up to 32 units) of the pictures: the atlas reads a layer's
    # snapshot at a time; the small arrays are one chunk each.
    pictures = ("snapshot", "unit", "tile_y", "tile_x", "channel")  # y, x: arrays here
    for name, shape, dtype, fill in (("value", (s, c), np.float32, 0),
                                     ("image_id", (s, c), np.int64, -1),
                                     ("y", (s, c), np.int32, -1), ("x", (s, c), np.int32, -1),
                                     ("projection_scale", (s, c), np.float32, 0),
                                     ("projections", (s, c, *tile, k), np.float16, 0),
                                     ("patches", (s, c, *tile, k), np.uint8, GREY)):
        chunks = shape if len(shape) == 2 else (1, min(c, 32), *tile, k)
        labelled_array(group, name, pictures[:len(shape)], shape, dtype, chunks=chunks,
                       fill_value=fill)
