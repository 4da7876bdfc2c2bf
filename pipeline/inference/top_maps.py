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
process and on its device, and writes it when its chunks are done:
``<activations.zarr>/top_maps/<first chunk>/`` with, per layer, ``<label>.ids.npy`` int64
``[unit, k]`` (-1: no image) and ``<label>.maps.npy`` float32 ``[unit, k, map_y, map_x]``;
the folder is written under another name and renamed into place. Layers are kept from the
deepest up while their maps fit ``MAX_BYTES`` (the deep ones are the ones whose maps cost a
forward pass through most of the network). At ``k`` = 9 VGG16's 13 layers take about 470 MB,
AlexNet's 5 about 18 MB.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

FOLDER = "top_maps"
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

    def begin(self, image_ids: Sequence[int], readable: Sequence[bool], device: torch.device
              ) -> None:
        """The next forward pass is of ``image_ids``; the unreadable ones are never kept."""
        self._batch = torch.as_tensor(list(image_ids), dtype=torch.int64).to(device)
        self._readable = torch.as_tensor(list(readable), dtype=torch.bool).to(device)
        self._start = {label: (self.values[label], self.ids[label], self.maps[label])
                       for label in self.values}

    def _before(self, label: str, output: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What was kept of ``label`` before this pass, or empty slots: nothing yet, or this is
        an earlier call of the module, of another shape than the last call it keeps."""
        units = output.shape[1]
        start = self._start.get(label)
        if start is not None and start[2].shape[:1] + start[2].shape[2:] == \
                output.shape[1:2] + output.shape[2:]:
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

    def save(self, folder: Path) -> None:
        """Write what is kept to ``folder`` (replacing it), under another name first."""
        folder = Path(folder)
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for label, maps in self.maps.items():
            np.save(partial / f"{label}.ids.npy", self.ids[label].cpu().numpy())
            np.save(partial / f"{label}.maps.npy", maps.cpu().numpy())
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)


class KeptMaps:
    """The maps the activations stage kept (all its shares' folders under ``folder``), looked up
    by unit and image."""

    def __init__(self, folder: Path | None) -> None:
        self.shares = sorted(p for p in Path(folder).iterdir()
                             if p.is_dir() and not p.name.startswith(".")) \
            if folder is not None and Path(folder).is_dir() else []

    def find(self, label: str, units: np.ndarray, image_ids: np.ndarray,
             map_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """For each request (unit, image id): whether its map is kept, and the kept maps of
        those that are, ``float32 [found, map_y, map_x]`` in request order. A share whose
        arrays do not have the layer's shape (from another model) is passed over."""
        found = np.zeros(len(units), bool)
        maps = np.zeros((len(units), *map_hw), np.float32)
        for share in self.shares:
            ids_file, maps_file = share / f"{label}.ids.npy", share / f"{label}.maps.npy"
            if not (ids_file.exists() and maps_file.exists()) or found.all():
                continue
            ids = np.load(ids_file)
            kept = np.load(maps_file, mmap_mode="r")
            if kept.shape[:2] != ids.shape or tuple(kept.shape[2:]) != tuple(map_hw) or \
                    len(units) and units.max() >= len(ids):
                continue
            match = (ids[units] == image_ids[:, None]) & (image_ids[:, None] >= 0)
            new = match.any(axis=1) & ~found
            if new.any():
                rows = np.flatnonzero(new)
                maps[rows] = kept[units[rows], match[rows].argmax(axis=1)]
                found[rows] = True
        return found, maps[found]
