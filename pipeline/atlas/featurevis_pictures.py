"""The featurevis stage's images in the atlas: what each unit wants, beside what it found.

For every unit in ``featurevis.zarr`` (:mod:`pipeline.featurevis.store`), one PNG per objective
the optimisation drove, written once and linked from the unit page and the layer page's tiles:

- ``mean``: the whole input, at the network's input size, pixel for pixel;
- ``centre``: an input the size of the unit's receptive field, binned by the layer's whole
  factor (:attr:`LayerEntry.binning`) exactly as its patches are, so that the unit page draws
  it at the scale of the patches and projections beside it.

Lossless (PNG) and in the input's channels (:func:`pipeline.atlas.channels.shown_rgb`), as the
projections are. An objective the optimisation did not raise (``driven`` false: the unit is
where it started after the last step, as a dead ReLU always is) gets no picture: its image
shows nothing that drives the unit, and the pages say so instead. The pictures are written on
the render stage's worker processes, a run of a layer's units per task
(:mod:`pipeline.atlas.parallel`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atlas.channels import shown_rgb
from pipeline.atlas.context import LayerEntry, OptimisationRecipe, OptimisedImage, SheetCell
from pipeline.atlas.parallel import Workers
from pipeline.atlas.tiles import binned, tile_scale
from pipeline.atlas.writer import ImageWriter
from pipeline.featurevis.meta import FeatureVisLayer, FeatureVisMeta
from pipeline.labelled import array_in, group_in

OPTIMISED_TARGET = 192  # px: a unit page's ``mean`` input is enlarged by the whole factor closest
UNITS_PER_TASK = 64  # units whose pictures one worker task writes
#: each objective's picture in the store (the objective dimension names the others' order)
PICTURES = {"mean": "images", "centre": "centre"}


def optimised_path(label: str, unit: int, objective: str) -> str:
    """A unit's optimised input for ``objective``, relative to the atlas root (lossless)."""
    return f"tiles/{label}/{unit:04d}-optimised-{objective}.png"


@dataclass(frozen=True)
class _Task:
    """Units at positions ``start`` to ``stop`` (excluded) of one layer group of the store, whose
    receptive-field pictures are binned by ``binning``."""

    label: str
    start: int
    stop: int
    binning: int


@dataclass(frozen=True)
class _Shared:
    store: Path
    out_dir: Path


def with_optimised(layers: Sequence[LayerEntry], store: Path, out_dir: Path, workers: Workers,
                   advance: Callable[[int], None] | None = None
                   ) -> tuple[list[LayerEntry], OptimisationRecipe]:
    """``layers`` with the optimised inputs of the units in ``store`` (the featurevis stage's),
    their pictures written under ``out_dir`` on ``workers``; and how they were optimised.
    Layers and units the store does not hold are returned as they are."""
    import zarr

    root = zarr.open_group(store, mode="r")
    meta = FeatureVisMeta.from_attrs(root.attrs)
    stored = {label for label, _ in root.groups()}
    tasks: list[_Task] = []
    for layer in layers:
        if layer.label not in stored:
            continue
        count = int(array_in(group_in(root, layer.label), "unit").shape[0])
        tasks.extend(_Task(layer.label, start, min(start + UNITS_PER_TASK, count), layer.binning)
                     for start in range(0, count, UNITS_PER_TASK))

    def done(task: _Task) -> None:
        if advance is not None:
            advance(task.stop - task.start)

    results = workers.map(_write_task, tasks, _Shared(Path(store), Path(out_dir)), done)
    found = {(task.label, unit): images
             for task, units in zip(tasks, results, strict=True) for unit, images in units}
    factor = tile_scale(meta.input_size, OPTIMISED_TARGET)
    out = []
    for layer in layers:
        if layer.label not in stored:
            out.append(layer)
            continue
        units = tuple(dataclasses.replace(unit, optimised=found.get((layer.label, unit.unit), ()))
                      for unit in layer.units)
        out.append(dataclasses.replace(layer, units=units, optimised_factor=factor))
    return out, OptimisationRecipe(meta.steps, meta.lr)


def _write_task(shared: _Shared, task: _Task) -> list[tuple[int, tuple[OptimisedImage, ...]]]:
    """One task of :func:`with_optimised`, in a worker: write the task's units' pictures and
    describe them, unit by unit."""
    import zarr

    root = zarr.open_group(shared.store, mode="r")
    objectives = FeatureVisMeta.from_attrs(root.attrs).objectives
    group = group_in(root, task.label)
    sides = {"mean": int(array_in(group, "images").shape[1]),  # the network's input
             "centre": FeatureVisLayer.from_attrs(group.attrs).side}  # its receptive field's
    span = slice(task.start, task.stop)
    units = np.asarray(array_in(group, "unit")[span])
    numbers = {name: np.asarray(array_in(group, name)[:, span])
               for name in ("value", "peak", "start", "driven")}
    data_peak = np.asarray(array_in(group, "data_peak")[span])
    writer = ImageWriter()
    try:
        out = []
        for i, unit in enumerate(int(u) for u in units):
            images = []
            for o, objective in enumerate(objectives):
                driven = bool(numbers["driven"][o, i])
                picture = None
                if driven and objective in PICTURES:
                    pixels = np.asarray(array_in(group, PICTURES[objective])[task.start + i])
                    factor = task.binning if objective == "centre" else 1
                    picture = _write_picture(pixels, factor, optimised_path(task.label, unit,
                                                                            objective),
                                             shared.out_dir, writer)
                images.append(OptimisedImage(
                    objective=objective, driven=driven, picture=picture,
                    side=sides.get(objective, 0),
                    peak=float(numbers["peak"][o, i]), data_peak=float(data_peak[i]),
                    value=float(numbers["value"][o, i]), start=float(numbers["start"][o, i])))
            out.append((unit, tuple(images)))
        return out
    finally:
        writer.close()


def _write_picture(pixels: np.ndarray, factor: int, path: str, out_dir: Path,
                   writer: ImageWriter) -> SheetCell:
    """Write uint8 ``[h, w, C]`` ``pixels`` binned by ``factor``, drawn in RGB, as a one-picture
    sheet at ``path`` (relative to ``out_dir``)."""
    from PIL import Image

    pixels = np.asarray(pixels)
    if factor > 1:
        pixels = np.clip(np.rint(binned(pixels[None], factor)[0]), 0, 255).astype(np.uint8)
    shown = np.ascontiguousarray(shown_rgb(pixels))
    h, w = shown.shape[:2]
    writer.save(Image.fromarray(shown), out_dir / path)
    return SheetCell(path, 0, 0, w, h, w, h)
