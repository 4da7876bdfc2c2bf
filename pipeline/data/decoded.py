"""Images decoded once, in parallel, into one raw file of network-sized ``uint8`` crops.

The deconv stage needs the top images of every unit, layer after layer; on ImageNet one image is
often the top image of dozens of units in several layers. Decoding a JPEG costs more than
projecting it on a GPU, so each distinct image is decoded once per stage (by DataLoader workers, as
the activations stage does) into ``pixels.u8``: image ``j`` of ``ids`` at byte ``j * C * side *
side``, ``[C, side, side]`` row-major, C the network's input channels. The crop is the transform's
output before scaling, so :meth:`pipeline.models.preprocessing.Preprocessing.normalise` of it is
exactly the network input. Reading a few images back costs one ``pread`` each and no memory beyond
them, whatever the number of images; the file lives in the stage's staging folder and goes with it.

``index.json`` is written last (atomically): without it, or for other ids, the file is rebuilt,
so a run killed while decoding decodes again and never reads a half-written file.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.atomic import read_json, remove, write_json
from pipeline.data.images import ImageDataset
from pipeline.data.tolerant import TolerantImages

PIXELS = "pixels.u8"
INDEX = "index.json"
BATCH = 32  # images per DataLoader batch while decoding
AUTO = -1  # num_workers: as many processes as the machine and the number of images warrant
MAX_AUTO_WORKERS = 8  # AUTO's ceiling, the number the shipped ImageNet workflows set


class DecodedImages:
    """The crops of ``ids`` (sorted, distinct image ids) in ``folder``; see the module doc."""

    def __init__(self, folder: Path, ids: np.ndarray, side: int, reasons: dict[int, str],
                 reused: bool = False, channels: int = 3) -> None:
        self.folder, self.side, self.reused = Path(folder), side, reused
        self.channels = channels
        self.ids = np.asarray(ids, dtype=np.int64)
        self.reasons = reasons  # image id -> why it could not be read (now)
        self._bytes = channels * side * side

    @classmethod
    def build(cls, folder: Path, ids: np.ndarray, images: ImageDataset, side: int,
              num_workers: int = 0, advance: Callable[[int], object] | None = None,
              channels: int = 3) -> DecodedImages:
        """Decode ``images[i]`` (a dataset giving ``uint8 [channels, side, side]``) for every
        id in ``ids`` into ``folder``, or reuse what a killed run of the same ids finished
        there, in ``num_workers`` DataLoader worker processes (0: in this process; ``AUTO``:
        see :func:`decoding_workers`). ``advance(n)`` is called after each batch (a progress
        bar's ``update``)."""
        folder = Path(folder)
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        shape = (channels, side, side)
        index = read_json(folder / INDEX)
        # an index without "channels" is from before they were recorded: RGB
        if isinstance(index, dict) and index.get("ids") == ids.tolist() \
                and index.get("side") == side and index.get("channels", 3) == channels:
            return cls(folder, ids, side, {int(k): v for k, v in index["reasons"].items()},
                       reused=True, channels=channels)
        remove(folder / INDEX)
        folder.mkdir(parents=True, exist_ok=True)
        subset = torch.utils.data.Subset(TolerantImages(images, shape, torch.uint8),
                                         ids.tolist())
        loader = DataLoader(subset, batch_size=BATCH,
                            num_workers=decoding_workers(num_workers, len(ids)))
        reasons: dict[int, str] = {}
        size = channels * side * side
        with open(folder / PIXELS, "wb") as out:
            out.truncate(len(ids) * size)
            position = 0
            for batch, image_ids, why in loader:
                crops = batch.numpy()
                if crops.dtype != np.uint8 or crops.shape[1:] != shape:
                    raise ValueError(f"expected uint8 crops {list(shape)}, got "
                                     f"{crops.dtype} {crops.shape[1:]}")
                _write_at(out.fileno(), np.ascontiguousarray(crops).tobytes(), position * size)
                position += len(crops)
                reasons.update((int(i), r) for i, r in zip(image_ids, why, strict=True) if r)
                if advance is not None:
                    advance(len(crops))
            out.flush()
            os.fsync(out.fileno())
        write_json(folder / INDEX, {"ids": ids.tolist(), "side": side, "channels": channels,
                                    "reasons": {str(k): v for k, v in reasons.items()}})
        return cls(folder, ids, side, reasons, channels=channels)

    def unreadable(self) -> list[tuple[int, str]]:
        """(image id, reason) of every image that could not be read, by id."""
        return sorted(self.reasons.items())

    def read(self, image_ids: np.ndarray) -> np.ndarray:
        """The crops of ``image_ids`` (each one of ``ids``), ``uint8 [n, C, side, side]``; an
        image that could not be read is all zeros (see :attr:`reasons`)."""
        rows = np.searchsorted(self.ids, image_ids)
        if len(image_ids) and (rows.max() >= len(self.ids)
                               or (self.ids[rows] != np.asarray(image_ids)).any()):
            missing = sorted(set(np.asarray(image_ids).tolist()) - set(self.ids.tolist()))
            raise KeyError(f"images {missing[:5]} were not decoded")
        shape = (self.channels, self.side, self.side)
        out = np.empty((len(image_ids), *shape), np.uint8)
        with open(self.folder / PIXELS, "rb") as source:
            for j, row in enumerate(rows):
                data = os.pread(source.fileno(), self._bytes, int(row) * self._bytes)
                out[j] = np.frombuffer(data, np.uint8).reshape(shape)
        return out

    def readable(self, image_ids: np.ndarray) -> np.ndarray:
        """Whether each of ``image_ids`` was read (False: zeros stand in for it)."""
        return np.array([int(i) not in self.reasons for i in image_ids], dtype=bool)


def decoding_workers(num_workers: int, images: int) -> int:
    """DataLoader workers to decode ``images`` images: ``num_workers``, or for ``AUTO`` one per
    CPU core this process may use, at most ``MAX_AUTO_WORKERS`` and one per ``BATCH`` images.
    All the cores: the stage does nothing else while it decodes. 0 (decode in this process)
    where that comes to one, which decodes no faster, or where this process is a daemon, which
    may start none (a dask nanny's worker)."""
    if num_workers != AUTO:
        return num_workers
    if multiprocessing.current_process().daemon:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1
    workers = min(cores, MAX_AUTO_WORKERS, -(-images // BATCH))
    return workers if workers > 1 else 0


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """All of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
