"""Each unit's whole maps in its strongest images, kept while the activations stage runs.

The deconv stage stores, for every unit and each of its top images, the unit's whole activation
map in that image (``maps`` of projections.zarr). Made there, they cost a forward pass over every
distinct top image: on AlexNet over 5,000 generated images (about 1,800 distinct top images)
14 s, more than half the engine's own time, and more on real data, where units share fewer top
images. The activations stage computes every one of those maps anyway. This keeps, per unit,
the maps of the ``k`` images with the largest peaks seen so far (``k``: rank's ``top_k``; ties
to the lower image id, as rank breaks them), and the deconv stage takes a map from here when it
is kept and makes only the others (:mod:`pipeline.interp.image_pass`).

A cache, not a record: whatever rank picks later, every kept map is that unit's map in that
image, so a map that is missing (a killed run resumed, ``top_k`` raised, a share's folder lost)
costs only its forward pass, and a kept map nobody asks for costs nothing. Kept only where the
passes run in float32 (no bf16 autocast, no TF32), so that its maps are the ones the deconv
stage would compute, up to the rounding of another batch.

Each share of the stage's chunks (:mod:`pipeline.inference.shard`) keeps its own, in its
process and on its device, and saves it into the staged ``top_maps`` folder (an artifact of its
own, beside ``activations.zarr``) before it marks its last chunk done: ``<first chunk>/`` with,
per layer, ``<label>.values.npy`` float32 and ``<label>.ids.npy`` int64 ``[unit, k]`` (-inf and
-1: no image) and ``<label>.maps.npy`` float32 ``[unit, k, map_y, map_x]``, synced, under
another name until whole. The one process that finishes the store merges the shares into the
same three files per layer at the folder's top (:func:`merge_shares`): one top ``k`` per unit
whatever the sharding, so that the artifact's bytes do not depend on how the work was split.
Layers are kept from the deepest up while their maps fit ``MAX_BYTES`` (the deep ones are the
ones whose maps cost a forward pass through most of the network). At ``k`` = 9 VGG16's 13
layers take about 470 MB, AlexNet's 5 about 18 MB; a batch's merge briefly needs about three
times a layer's share of that.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

PARTS = ("values", "ids", "maps")
MAX_BYTES = 512 << 20  # kept maps per process (on its device) at most


def kept_layers(shapes: Mapping[str, tuple[int, int, int]], k: int,
                max_bytes: int = MAX_BYTES) -> list[str]:
    """The layers (of ``shapes``: label -> units, map_y, map_x, in network order) whose maps
    are kept: from the deepest up, while they fit ``max_bytes``."""
    chosen, total = [], 0
    for label in reversed(list(shapes)):
        units, height, width = shapes[label]
        size = units * k * height * width * 4
        if total + size > max_bytes:
            break
        chosen.append(label)
        total += size
    return chosen[::-1]


class TopMaps:
    """The running top ``k`` maps per unit of some layers; see the module doc. Call
    :meth:`begin` with each batch's image ids before its forward pass, and :meth:`offer` from
    the forward hook of each layer (with the output as the hook sees it: a later in-place module
    may change it)."""

    def __init__(self, layers: Mapping[str, str], k: int) -> None:
        self.layers, self.k = dict(layers), k  # module name -> label, of the kept layers
        self.values: dict[str, torch.Tensor] = {}  # [unit, k] float32, -inf: none
        self.ids: dict[str, torch.Tensor] = {}  # [unit, k] int64, -1: none
        self.maps: dict[str, torch.Tensor] = {}  # [unit, k, map_y, map_x] float32
        self._batch: torch.Tensor | None = None
        self._readable: torch.Tensor | None = None
        # label -> what was kept before the current pass: every call of a module merges into
        # that, so a module called several times per pass keeps its last call's maps (as the
        # recorder keeps its last call's summaries)
        self._start: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def begin(self, image_ids: Sequence[int], unreadable: Sequence[str], device: torch.device
              ) -> None:
        """The next forward pass is of ``image_ids`` (consecutive, as the stage's batches are),
        none kept where ``unreadable`` names a reason. Made on the device: a copy from the host
        would wait for it."""
        ids = [int(i) for i in image_ids]
        consecutive = ids == list(range(ids[0], ids[0] + len(ids)))
        self._batch = torch.arange(ids[0], ids[0] + len(ids), device=device) if consecutive \
            else torch.as_tensor(ids, device=device)
        self._readable = torch.ones(len(image_ids), dtype=torch.bool, device=device)
        if any(unreadable):  # rare: only then a copy from the host
            self._readable = torch.as_tensor([not reason for reason in unreadable],
                                             device=device)
        self._start = {label: (self.values[label], self.ids[label], self.maps[label])
                       for label in self.values}

    def _before(self, label: str, output: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What was kept of ``label`` before this pass, or empty slots: nothing yet, or this is
        an earlier call of the module, of another shape than the last call it keeps."""
        units = output.shape[1]
        start = self._start.get(label)
        if start is not None and start[2].shape[0] == units and \
                start[2].shape[2:] == output.shape[2:]:
            return start
        return (output.new_full((units, self.k), float("-inf"), dtype=torch.float32),
                torch.full((units, self.k), -1, dtype=torch.int64, device=output.device),
                output.new_zeros((units, self.k, *output.shape[2:]), dtype=torch.float32))

    def offer(self, module: str, output: torch.Tensor, peaks: torch.Tensor) -> None:
        """Merge one batch's maps of layer ``module`` (``output`` ``[B, unit, y, x]``, each map's
        largest value ``peaks`` ``[B, unit]``) into the kept ones. No host synchronisation."""
        label = self.layers.get(module)
        if label is None or self._batch is None or self._readable is None:
            return
        batch, units = output.shape[:2]
        old_values, old_ids, old_maps = self._before(label, output)
        offered = peaks.float().t().masked_fill(~self._readable[None, :batch], float("-inf"))
        offered = offered.nan_to_num(nan=float("-inf"))
        values = torch.cat([old_values, offered], dim=1)  # [unit, k + B]
        ids = torch.cat([old_ids, self._batch[None, :batch].expand(units, -1)], dim=1)
        # largest first, ties to the lower image id (an empty slot's id, -1, never ties a value)
        by_id = ids.argsort(dim=1, stable=True)
        by_value = values.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
        order = by_id.gather(1, by_value)[:, :self.k]  # [unit, k] into [0, k + B)
        unit = torch.arange(units, device=output.device)[:, None].expand(-1, self.k)
        # gathers, not masks: a boolean index would wait for the device
        was_kept = old_maps[unit, order.clamp(max=self.k - 1)]
        offered_maps = output.detach()[(order - self.k).clamp(min=0), unit].float()
        maps = torch.where((order < self.k)[:, :, None, None], was_kept, offered_maps)
        self.values[label] = values.gather(1, order)
        self.ids[label] = ids.gather(1, order).masked_fill(self.values[label] == float("-inf"),
                                                           -1)
        self.maps[label] = maps

    def save(self, folder: Path, still_current: Callable[[], bool] | None = None) -> None:
        """Write what is kept to ``folder`` (replacing it), synced, under another name first;
        nothing when its parent, the staged ``top_maps``, is gone (committed, or recreated by
        another run) or ``still_current`` says the run is no longer this one's."""
        _save_layers(folder, {label: (self.values[label].cpu().numpy(),
                                      self.ids[label].cpu().numpy(),
                                      self.maps[label].cpu().numpy()) for label in self.maps},
                     still_current)


def _save_layers(folder: Path, layers: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                 still_current: Callable[[], bool] | None = None) -> None:
    """Each layer's (values, ids, maps) as ``<label>.values/ids/maps.npy`` in ``folder``."""
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()  # not its parents: a folder moved away is not made again
    except FileNotFoundError:
        return
    for label, arrays in layers.items():
        for name, values in zip(PARTS, arrays, strict=True):
            with open(partial / f"{label}.{name}.npy", "wb") as file:
                np.save(file, values)
                file.flush()
                os.fsync(file.fileno())
    if still_current is not None and not still_current():
        shutil.rmtree(partial, ignore_errors=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def _load_layer(folder: Path, label: str, mmap: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A layer's (values, ids, maps) in ``folder``, None when missing or unreadable (a cache:
    a map it lacks is computed again)."""
    try:
        values, ids = (np.load(folder / f"{label}.{name}.npy") for name in PARTS[:2])
        maps = np.load(folder / f"{label}.maps.npy", mmap_mode="r" if mmap else None)
    except (OSError, ValueError):
        return None
    if values.shape != ids.shape or maps.shape[:2] != ids.shape:
        return None
    return values, ids, maps


def merge_shares(folder: Path) -> None:
    """Merge the shares' folders in ``folder`` (and what an earlier, killed merge wrote at its
    top) into one top ``k`` per unit and layer at its top, ties to the lower image id, each
    image once; then remove the shares' folders and what killed saves left."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    shares = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    labels = sorted({f.name.removesuffix(".ids.npy") for share in shares  # "layer3.1.relu"
                     for f in share.glob("*.ids.npy")})
    merged = {}
    for label in labels:
        found = [layer for layer in (_load_layer(place, label) for place in (folder, *shares))
                 if layer is not None]
        shapes = {(maps.shape[0], *maps.shape[2:]) for _, _, maps in found}
        if len(shapes) != 1:  # none readable, or shares of different shapes: keep none
            continue
        merged[label] = _top(found)
    staged = folder / ".merged"
    _save_layers(staged, merged)
    for label in labels:
        for name in PARTS:
            (folder / f"{label}.{name}.npy").unlink(missing_ok=True)
    for file in staged.iterdir():
        file.rename(folder / file.name)
    for place in folder.iterdir():
        if place.is_dir():
            shutil.rmtree(place, ignore_errors=True)


def _top(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top ``k`` of several (values, ids, maps) of one layer, per unit."""
    values = np.concatenate([layer[0] for layer in found], axis=1)
    ids = np.concatenate([layer[1] for layer in found], axis=1)
    units, k = len(ids), max(layer[1].shape[1] for layer in found)
    out_values = np.full((units, k), -np.inf, np.float32)
    out_ids = np.full((units, k), -1, np.int64)
    out_maps = np.zeros((units, k, *found[0][2].shape[2:]), np.float32)
    starts = np.cumsum([0] + [layer[1].shape[1] for layer in found])
    for unit in range(units):
        seen: set[int] = set()
        taken = 0
        for j in np.lexsort((ids[unit], -values[unit])):
            image = int(ids[unit, j])
            if taken == k:
                break
            if image < 0 or image in seen:
                continue
            seen.add(image)
            share = int(np.searchsorted(starts, j, side="right")) - 1
            out_values[unit, taken], out_ids[unit, taken] = values[unit, j], image
            out_maps[unit, taken] = found[share][2][unit, j - starts[share]]
            taken += 1
    return out_values, out_ids, out_maps


class KeptMaps:
    """The maps the activations stage kept (the merged ``top_maps`` folder), looked up by unit
    and image."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = None if folder is None else Path(folder)

    def find(self, label: str, units: np.ndarray, image_ids: np.ndarray,
             map_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """For each request (unit, image id): whether its map is kept, and the kept maps of
        those that are, ``float32 [found, map_y, map_x]`` in request order. Arrays that do not
        fit the layer (from another model) or cannot be read count as nothing kept."""
        found = np.zeros(len(units), bool)
        layer = None if self.folder is None else _load_layer(self.folder, label)
        if layer is None or not len(units):
            return found, np.zeros((0, *map_hw), np.float32)
        _, ids, kept = layer
        if tuple(kept.shape[2:]) != tuple(map_hw) or units.max() >= len(ids):
            return found, np.zeros((0, *map_hw), np.float32)
        match = (ids[units] == image_ids[:, None]) & (image_ids[:, None] >= 0)
        found = match.any(axis=1)
        rows = np.flatnonzero(found)
        try:
            maps = np.asarray(kept[units[rows], match[rows].argmax(axis=1)], np.float32)
        except (OSError, ValueError):
            return np.zeros(len(units), bool), np.zeros((0, *map_hw), np.float32)
        return found, maps
