"""What the deconv stage needs once per distinct top image: its thumbnail and its units' maps.

A unit's whole activation map in an image (``maps`` of :mod:`pipeline.interp.projection_store`)
is its module's output for that image, and the thumbnail (``thumbs``) depends on the image
alone. Made per batch of projections, as they once were, they cost a forward pass of the whole
model per batch and layer: on AlexNet over 1,000 images (10,330 projections of 820 distinct top
images) about 12 passes per image, a third of the stage's time. This pass runs before any
projection and takes each distinct top image once: one forward pass with a hook on every
analysed module that keeps only the requested units' maps (the module's last call per pass, the
one the activations stage records), stopped once those modules have run, and one thumbnail.
Images are grouped by the deepest layer they are a top image of, so that most passes stop
early. Most maps need no pass at all: the activations stage kept each unit's maps in its
strongest images (:mod:`pipeline.inference.top_maps`), and those are taken from there; only the
images with a map still missing pass through the model (none, when the activations ran in
float32, uninterrupted, with rank's ``top_k``, and kept every layer), and the others are read
for their thumbnails alone.

Results go to the staged store's scratch folder: one raw ``float32`` file per layer laid out as
the store's ``maps`` array ``[unit, rank, map_y, map_x]`` (zeros where a unit has fewer top
images or the image cannot be read), so a block of units is one contiguous read and memory does
not grow with the number of units, and ``thumbs.u8``, ``uint8 [image, thumb_y, thumb_x,
channel]``. ``index.json`` is written last (atomically), as for :mod:`pipeline.data.decoded`: a
run killed during the pass makes it again, a run killed later reuses it, so a resumed run stores
what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.atomic import read_json, remove, write_json
from pipeline.errors import UserError
from pipeline.inference.top_maps import KeptMaps
from pipeline.interp.receptive_field import module_call_counts
from pipeline.models.evaluation import evaluating
from pipeline.models.pooling import shifted_max_pooling

if TYPE_CHECKING:
    from pipeline.data.decoded import DecodedImages
    from pipeline.interp.projection_store import LayerPlan

INDEX = "index.json"
THUMBS = "thumbs.u8"
THUMB = 64  # side of the whole-image thumbnails the atlas draws receptive-field boxes on


class _Stop(Exception):
    """Raised from a hook once every module the pass needs has run."""


class ImagePass:
    """The thumbnails and maps of the top images, in ``folder``; see the module doc."""

    def __init__(self, folder: Path, ids: np.ndarray, shapes: dict[str, tuple[int, ...]],
                 channels: int, reused: bool = False) -> None:
        self.folder, self.ids, self.shapes = Path(folder), ids, shapes
        self.channels, self.reused = channels, reused
        self.kept = 0  # maps taken from the activations stage's (in a pass made here)
        self.passed = 0  # images passed through the model for the others

    @classmethod
    def build(cls, folder: Path, model: nn.Module, layers: Sequence[LayerPlan],
              topk: pd.DataFrame, top_k: int, decoded: DecodedImages,
              normalise: Callable[[Tensor], Tensor], batch_size: int,
              advance: Callable[[int], object] | None = None,
              kept: KeptMaps | None = None) -> ImagePass:
        """Make the thumbnails and maps of ``topk``'s rows of ``layers`` (rank's table: layer,
        unit, rank, image_id) from the ``decoded`` images, ``batch_size`` images per forward
        pass, or reuse what a killed run of the same rows finished in ``folder``. The maps
        ``kept`` by the activations stage are taken from there, and only the images with a
        map still missing pass through the model. ``advance(n)`` is called after each ``n``
        images."""
        folder = Path(folder)
        shapes: dict[str, tuple[int, ...]] = {
            layer.label: (layer.channels, top_k, *layer.map_hw) for layer in layers}
        requests = {layer.label: _requests(topk, layer, decoded) for layer in layers}
        ids = np.unique(np.concatenate([r["image_id"] for r in requests.values()] or
                                       [np.empty(0, np.int64)]))
        made = cls(folder, ids, shapes, decoded.channels)
        key = _fingerprint(shapes, requests, decoded.channels)
        if read_json(folder / INDEX) == {"requests": key}:
            made.reused = True
            return made
        remove(folder / INDEX)
        folder.mkdir(parents=True, exist_ok=True)
        with _PassFiles(folder, shapes, ids) as files:
            missing = files.kept_maps(requests, kept or KeptMaps(None),
                                      {layer.label: layer.map_hw for layer in layers})
            need = np.unique(np.concatenate([r["image_id"] for r in missing.values()] or
                                            [np.empty(0, np.int64)]))
            made.kept = sum(len(r["unit"]) - len(missing[label]["unit"])
                            for label, r in requests.items())
            made.passed = len(need)
            device = next(model.parameters()).device
            maps = _MapPass(model, layers, missing)
            for batch in maps.batches(need, batch_size):
                pixels = torch.from_numpy(decoded.read(batch))
                for label, (rows, values) in maps.run(normalise(pixels.to(device)),
                                                      batch).items():
                    files.maps(label, values, missing[label], rows)
                files.thumbs(batch, pixels, advance)
            rest = np.setdiff1d(ids, need)  # their thumbnails only
            for start in range(0, len(rest), batch_size):
                batch = rest[start:start + batch_size]
                files.thumbs(batch, torch.from_numpy(decoded.read(batch)), advance)
        write_json(folder / INDEX, {"requests": key})
        return made

    def maps(self, label: str, start: int, stop: int) -> np.ndarray:
        """The maps of units ``start`` to ``stop`` of layer ``label``, ``float32 [unit, rank,
        map_y, map_x]``."""
        _, *cell = self.shapes[label]
        return _read_at(self.folder / f"{label}.f32", (stop - start, *cell), np.float32,
                        start * int(np.prod(cell)) * 4)

    def thumbs(self, image_ids: np.ndarray) -> np.ndarray:
        """The thumbnails of ``image_ids`` (each a readable top image), ``uint8 [n, thumb_y,
        thumb_x, channel]``."""
        rows = np.searchsorted(self.ids, image_ids)
        if len(image_ids) and (rows.max() >= len(self.ids) or
                               (self.ids[rows] != np.asarray(image_ids)).any()):
            missing = sorted(set(np.asarray(image_ids).tolist()) - set(self.ids.tolist()))
            raise KeyError(f"images {missing[:5]} have no thumbnail")
        out = np.empty((len(rows), THUMB, THUMB, self.channels), np.uint8)
        with open(self.folder / THUMBS, "rb") as source:
            for j, row in enumerate(rows):
                data = os.pread(source.fileno(), out[j].nbytes, int(row) * out[j].nbytes)
                out[j] = np.frombuffer(data, np.uint8).reshape(out.shape[1:])
        return out


def thumbnails(pixels: Tensor) -> np.ndarray:
    """``uint8 [n, C, H, W]`` images as ``THUMB``-pixel squares, ``uint8 [n, THUMB, THUMB, C]``
    (antialiased: a plain bilinear resize of a 224-pixel image aliases)."""
    small = F.interpolate(pixels.float() / 255, size=(THUMB, THUMB), mode="bilinear",
                          antialias=True, align_corners=False)
    return (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class _PassFiles:
    """The pass's files while it writes them (synced on a clean exit): each layer's maps,
    zeros until written, and the thumbnails of ``ids``."""

    def __init__(self, folder: Path, shapes: dict[str, tuple[int, ...]], ids: np.ndarray
                 ) -> None:
        self.folder, self.shapes, self.ids = folder, shapes, ids
        self._stack = contextlib.ExitStack()
        self.files: dict[str, BinaryIO] = {}

    def __enter__(self) -> _PassFiles:
        self.files = {name: self._stack.enter_context(open(self.folder / name, "wb"))
                      for name in (*(f"{label}.f32" for label in self.shapes), THUMBS)}
        for label, shape in self.shapes.items():
            self.files[f"{label}.f32"].truncate(int(np.prod(shape)) * 4)
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            if kind is None:
                for file in self.files.values():
                    file.flush()
                    os.fsync(file.fileno())
        finally:
            self._stack.close()

    def maps(self, label: str, values: np.ndarray, requests: dict[str, np.ndarray],
             rows: np.ndarray) -> None:
        """The maps ``values`` of the layer's requests ``rows``."""
        _write_maps(self.files[f"{label}.f32"].fileno(), values, requests, rows,
                    self.shapes[label])

    def kept_maps(self, requests: dict[str, dict[str, np.ndarray]], kept: KeptMaps,
                  map_hw: dict[str, tuple[int, int]]) -> dict[str, dict[str, np.ndarray]]:
        """Write the requested maps ``kept`` has; the requests still missing, per layer."""
        missing = {}
        for label, wanted in requests.items():
            found, values = kept.find(label, wanted["unit"], wanted["image_id"], map_hw[label])
            self.maps(label, values, wanted, np.flatnonzero(found))
            missing[label] = {name: column[~found] for name, column in wanted.items()}
        return missing

    def thumbs(self, batch: np.ndarray, pixels: Tensor,
               advance: Callable[[int], object] | None) -> None:
        """The thumbnails of images ``batch`` from their ``pixels``; then ``advance``."""
        for row, thumb in zip(np.searchsorted(self.ids, batch), thumbnails(pixels),
                              strict=True):
            _write_at(self.files[THUMBS].fileno(), thumb, int(row) * thumb.nbytes)
        if advance is not None:
            advance(len(batch))


class _MapPass:
    """Forward passes that keep the requested units' maps of each analysed module."""

    def __init__(self, model: nn.Module, layers: Sequence[LayerPlan],
                 requests: dict[str, dict[str, np.ndarray]]) -> None:
        self.model, self.requests = model, requests
        self.modules = {layer.label: layer.module for layer in layers}
        self.traced = False  # the model is traced for its calls per module when first run
        self.calls: dict[str, int] | None = None
        self.depth = {label: i for i, label in enumerate(self.modules)}

    def batches(self, ids: np.ndarray, size: int) -> list[np.ndarray]:
        """``ids`` in passes of ``size`` images, each sorted, grouped by the deepest layer
        (in the activations store's order) an image is a top image of."""
        deepest = np.full(len(ids), -1)
        for label, requests in self.requests.items():
            rows = np.searchsorted(ids, requests["image_id"])
            np.maximum.at(deepest, rows, self.depth[label])
        order = np.lexsort((ids, deepest))
        return [np.sort(ids[order[start:start + size]]) for start in range(0, len(ids), size)]

    def run(self, images: Tensor, batch: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """One forward pass of ``images`` (the sorted ids ``batch``): per layer with requests on
        them, (those requests' indices, their maps ``float32 [n, map_y, map_x]``)."""
        if not self.traced:
            counts = module_call_counts(self.model)
            # None: untraceable, so unknown when a module has made its last call: no early stop
            self.calls = None if counts is None else \
                {label: max(1, counts.get(module, 1)) for label, module in self.modules.items()}
            self.traced = True
        outputs: dict[str, Tensor] = {}  # each module's last call (so far)
        picked: dict[str, Tensor] = {}
        runs: dict[str, int] = {}
        wanted: dict[str, tuple[np.ndarray, tuple[Tensor, Tensor]]] = {}
        for label in self.modules:
            rows = _on_images(self.requests[label]["image_id"], batch)
            if len(rows):
                image = np.searchsorted(batch, self.requests[label]["image_id"][rows])
                wanted[label] = (rows, (
                    torch.from_numpy(image).to(images.device),
                    torch.from_numpy(self.requests[label]["unit"][rows]).to(images.device)))

        def keep(label: str, output: Tensor) -> None:
            runs[label] = runs.get(label, 0) + 1
            if self.calls is None:  # which call is the last one is known only at the end
                outputs[label] = output.detach()
            elif runs[label] == self.calls[label]:
                picked[label] = output.detach()[wanted[label][1]]  # the requested maps only
                if len(picked) == len(wanted):
                    raise _Stop

        handles = [self.model.get_submodule(self.modules[label]).register_forward_hook(
            lambda _module, _args, output, label=label: keep(label, output))
            for label in wanted]
        try:
            with evaluating(self.model), shifted_max_pooling(images.device):
                self.model(images)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        picked.update((label, output[wanted[label][1]]) for label, output in outputs.items())
        silent = [self.modules[label] for label in wanted if label not in picked]
        if silent:
            raise UserError(f"module {silent[0]!r} did not run in the forward pass (or less "
                            "often than the model's trace says); analyse modules the forward "
                            "uses (`layers` lists them)")
        return {label: (wanted[label][0], picked[label].float().cpu().numpy())
                for label in wanted}


def _requests(topk: pd.DataFrame, layer: LayerPlan, decoded: DecodedImages
              ) -> dict[str, np.ndarray]:
    """The layer's rows whose image was read, as arrays sorted by image (unit, rank within)."""
    rows = topk[(topk["layer"] == layer.label) & (topk["unit"] < layer.channels)]
    rows = rows[decoded.readable(rows["image_id"].to_numpy(np.int64))]
    columns = {name: rows[name].to_numpy(np.int64) for name in ("image_id", "unit", "rank")}
    order = np.lexsort((columns["rank"], columns["unit"], columns["image_id"]))
    return {name: values[order] for name, values in columns.items()}


def _on_images(image_ids: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Indices of the requests (sorted by image) whose image is one of ``batch`` (sorted)."""
    start = np.searchsorted(image_ids, batch, "left")
    stop = np.searchsorted(image_ids, batch, "right")
    return np.concatenate([np.arange(a, b) for a, b in zip(start, stop, strict=True)] or
                          [np.empty(0, np.int64)])


def _fingerprint(shapes: dict[str, tuple[int, ...]],
                 requests: dict[str, dict[str, np.ndarray]], channels: int) -> str:
    """A digest of what the pass is of: each layer's shape and requests, and the channels."""
    digest = hashlib.sha256(f"{channels} {THUMB}".encode())
    for label, shape in shapes.items():
        digest.update(f"{label}{shape}".encode())
        for values in requests[label].values():
            digest.update(values.tobytes())
    return digest.hexdigest()


def _write_maps(fd: int, maps: np.ndarray, requests: dict[str, np.ndarray], rows: np.ndarray,
                shape: tuple[int, ...]) -> None:
    """Write the maps of requests ``rows``, each at its (unit, rank) place of the layer's
    file."""
    for values, unit, rank in zip(maps, requests["unit"][rows], requests["rank"][rows],
                                  strict=True):
        _write_at(fd, values, (int(unit) * shape[1] + int(rank)) * values.nbytes)


def _write_at(fd: int, values: np.ndarray, offset: int) -> None:
    """All of ``values``' bytes at ``offset`` (``pwrite`` may write less than asked)."""
    data = np.ascontiguousarray(values).data.cast("B")
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _read_at(path: Path, shape: tuple[int, ...], dtype: type, offset: int) -> np.ndarray:
    """An array of ``shape`` read from ``path`` at byte ``offset``."""
    out: np.ndarray = np.empty(shape, dtype)
    if not out.size:
        return out
    with open(path, "rb") as source:
        source.seek(offset)
        read = source.readinto(out.data.cast("B"))
    if read != out.nbytes:
        raise ValueError(f"{path} is cut off: read {read} of {out.nbytes} bytes at {offset}")
    return out
