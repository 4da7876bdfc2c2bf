"""Gathering the atlas: every table and projection of a run turned into images and a context.

Images are written here (tiles, thumbnail and activation-map sheets, the filter grid);
:mod:`pipeline.atlas.render` only writes HTML. Files per unit are kept to one per method: the
Figure 2 tile (projections with the first method, and the patches), which the unit page also
shows cell by cell, and for every further method a grid of its projections; thumbnails and
activation maps of the top images are grouped ``THUMB_GROUP`` units to a sheet. Projections are
turned into pixels here, from the exact values the deconv stage stored
(:func:`pipeline.interp.display.to_display`); they and the patches are drawn in the input's
channels (:func:`pipeline.atlas.channels.shown_rgb`: grey for a greyscale model). A layer is
gathered in tasks of one sheet's units each, on the render stage's worker processes
(:mod:`pipeline.atlas.parallel`); within a task, image encoding runs on a small thread pool
(Pillow releases the GIL while it encodes).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atlas.channels import shown_rgb
from pipeline.atlas.context import (
    Fractions,
    LayerEntry,
    ProjectionCell,
    SheetCell,
    SkippedImage,
    TopImage,
    UnitEntry,
)
from pipeline.atlas.first_layer import FirstLayer
from pipeline.atlas.parallel import Workers
from pipeline.atlas.sheets import THUMB_GROUP, heat_box, write_sheets
from pipeline.atlas.tiles import (
    bin_factor,
    binned,
    compose_grid,
    fit_cells,
    grid_side,
    projection_grid_width,
    tile_cells,
    tile_scale,
)
from pipeline.atlas.weak import weak_units
from pipeline.atlas.writer import ImageWriter
from pipeline.inference.store import LayerMeta
from pipeline.interp.display import CURVES, common_scale, curve_display, display_scale
from pipeline.interp.projection_meta import ProjectedLayer
from pipeline.ranking.picks import class_priors, dominant_class
from pipeline.schemas import Histograms, Manifest, Selectivity, Skipped, UnitKey, Units

MAX_CELL = 64  # px: larger receptive fields are binned by a whole factor to at most this
# (the size of a shared atlas: every projection is stored losslessly, once per display curve)
MIN_CELL = 16  # px: the picture budget never bins a field below this (pipeline.atlas.gather)
PATCH_QUALITY = 95  # JPEG quality (4:4:4) of the patch grids: see README "Pictures"
TILE_TARGET = 48  # px: a tile's cells are enlarged by the whole factor that comes closest
PAGE_TARGET = 128  # px: ... and a unit page's pictures
SKIPPED_SHOWN = 50  # unreadable images listed on the index (all are in skipped.parquet)
@dataclass
class RunTables:
    """What the render stage reads from the run folder, in memory."""

    classes: list[str]
    manifest: pd.DataFrame
    units: pd.DataFrame
    topk: pd.DataFrame
    selectivity: pd.DataFrame
    histograms: pd.DataFrame
    skipped: pd.DataFrame
    labels: np.ndarray  # true class per image
    predictions: np.ndarray  # top-1 predicted class per image (-1: unreadable)

    @functools.cached_property
    def priors(self) -> np.ndarray:
        """Each class's share of the analysed images (its chance of being a top image)."""
        return class_priors(self.labels, self.predictions, len(self.classes))


@dataclass(frozen=True)
class LayerInput:
    """One analysed layer to gather: its label, the activations store's attributes of it, and
    the first convolution's filters when its projections are those filters (the paper's layer 1,
    shown once per unit)."""

    label: str
    meta: LayerMeta
    first: FirstLayer | None = None


@dataclass(frozen=True)
class UnitRange:
    """A task of :func:`gather_layers`: units ``start`` to ``stop`` (excluded) of one layer,
    whole thumbnail sheets (``start`` is a multiple of THUMB_GROUP)."""

    layer: LayerInput
    start: int
    stop: int


@dataclass(frozen=True)
class _LayerInputs:
    """What every task of :func:`gather_layers` reads besides its own units."""

    tables: RunTables
    projections: Path  # the deconv stage's store, opened read-only by each task
    out_dir: Path
    top_k: int
    image_size: int | None
    sanity: Path | None = None  # the sanity stage's randomised projections (sanity.zarr)
    max_cell: int = MAX_CELL  # px: fields are binned by whole factors to at most this


def gather_layers(layers: Sequence[LayerInput], tables: RunTables, projections: Path,
                  out_dir: Path, top_k: int, image_size: int | None, workers: Workers,
                  advance: Callable[[int], None] | None = None,
                  sanity: Path | None = None, picture_budget: float = 0.0
                  ) -> list[LayerEntry]:
    """Write every layer's tiles and sheets and describe its units, on ``workers``, in tasks of
    one thumbnail sheet's units (a layer is too coarse: AlexNet has 5, VGG16 13 of very unequal
    sizes). ``advance(n)`` is called as n more units are written. Projections are binned to
    fit ``picture_budget`` pixels (:func:`cell_limit`; 0: only fields above MAX_CELL)."""
    import zarr

    from pipeline.labelled import array_in, group_in

    store = zarr.open_group(projections, mode="r")
    fields = []
    for layer in layers:
        pictures = array_in(group_in(store, layer.label), "projections")
        live = tables.units[(tables.units[Units.layer] == layer.label) & ~tables.units[Units.dead]]
        methods = 0 if layer.first is not None else int(pictures.shape[0])
        fields.append((int(max(pictures.shape[3:5])), len(live), methods))
    max_cell = cell_limit(fields, top_k, picture_budget)
    tasks: list[UnitRange] = []
    owners: list[int] = []  # the index in ``layers`` of each task's layer
    costs: list[int] = []
    for number, layer in enumerate(layers):
        pictures = array_in(group_in(store, layer.label), "projections")
        methods, stored, _, height, width = pictures.shape[:5]
        listed = tables.units.loc[tables.units[Units.layer] == layer.label, Units.unit]
        count = max(stored, int(listed.max()) + 1 if len(listed) else 0)
        for start in range(0, count, THUMB_GROUP):
            tasks.append(UnitRange(layer, start, min(start + THUMB_GROUP, count)))
            owners.append(number)
            # about the pixels the task turns into images: its projections, then its sheets
            costs.append((tasks[-1].stop - start) * (methods * height * width + 4096))

    def done(task: UnitRange) -> None:
        if advance is not None:
            advance(task.stop - task.start)

    # the costliest first (deep layers' large fields), so that no long task starts last
    order = sorted(range(len(tasks)), key=lambda i: -costs[i])
    inputs = _LayerInputs(tables, Path(projections), Path(out_dir), top_k, image_size, sanity,
                          max_cell)
    results = dict(zip(order, workers.map(_write_unit_range, [tasks[i] for i in order], inputs,
                                          done), strict=True))
    units: list[list[UnitEntry]] = [[] for _ in layers]
    for i in range(len(tasks)):  # in unit order, whichever task finished first
        units[owners[i]].extend(results[i])
    return [dataclasses.replace(
        _layer_entry(layer, ProjectedLayer.from_attrs(store[layer.label].attrs), tuple(entries),
                     image_size), binning=bin_factor(side, max_cell))
        for layer, entries, (side, _, _) in zip(layers, units, fields, strict=True)]


def cell_limit(fields: Sequence[tuple[int, int, int]], top_k: int, budget: float) -> int:
    """The largest cell side (MIN_CELL to MAX_CELL px) at which the atlas's projection pictures
    fit ``budget`` pixels: ``fields`` holds each layer's (receptive field side, live units,
    methods); every projection is stored once per display curve, binned by the smallest whole
    factor that brings its side to the limit. A budget of 0 or less: MAX_CELL."""
    if budget <= 0:
        return MAX_CELL

    def pixels(limit: int) -> int:
        return sum(units * top_k * methods * len(CURVES)
                   * math.ceil(side / bin_factor(side, limit)) ** 2
                   for side, units, methods in fields)

    return next((limit for limit in range(MAX_CELL, MIN_CELL - 1, -1) if pixels(limit) <= budget),
                MIN_CELL)


def _write_unit_range(inputs: _LayerInputs, task: UnitRange) -> tuple[UnitEntry, ...]:
    """One task of :func:`gather_layers`, in a worker: write the units' tiles and sheet."""
    import zarr

    group = zarr.open_group(inputs.projections, mode="r")[task.layer.label]
    writer = ImageWriter()
    try:
        return tuple(_unit_entries(inputs, group, task, writer))
    finally:
        writer.close()


def _unit_entries(inputs: _LayerInputs, group: Any, task: UnitRange, writer: ImageWriter
                  ) -> list[UnitEntry]:
    """Write the pictures and thumbnail sheet of the task's units; describe each of them."""
    label, first, tables, top_k = task.layer.label, task.layer.first, inputs.tables, inputs.top_k
    out_dir, image_size = inputs.out_dir, inputs.image_size
    # Read unit by unit (chunks are per unit): a VGG layer's projections are gigabytes.
    projections, patches = group["projections"], group["patches"]
    scales = group["projection_scale"]
    stored = ProjectedLayer.from_attrs(group.attrs)
    methods = list(stored.methods) if first is None else []
    boxes = group["boxes"][task.start:task.stop]
    grid = grid_side(top_k)
    cell_hw = shown_cells(patches[:1, 0], inputs.max_cell).shape[1:3] if patches.shape[0] \
        else (1, 1)
    factor = bin_factor(max(patches.shape[2:4]), inputs.max_cell) if patches.shape[0] else 1
    (width, height), cells, _ = tile_cells(top_k, cell_hw, 1, grid)
    sheet = (projection_grid_width(width), height)

    def rows(table: pd.DataFrame) -> pd.DataFrame:
        return table[(table[UnitKey.layer] == label) & (table[UnitKey.unit] >= task.start)
                     & (table[UnitKey.unit] < task.stop)]

    units = rows(tables.units).set_index("unit").sort_index()
    topk = dict(tuple(rows(tables.topk).groupby("unit")))
    selectivity = _unit_classes(rows(tables.selectivity), tables.classes)
    histograms = _unit_histograms(rows(tables.histograms))
    sheets = write_sheets(label, group, out_dir, writer, image_size, task.start, task.stop)
    heat = heat_box(stored.map_extent, image_size)
    randomised = _randomised_store(inputs.sanity, label)

    entries = []
    for unit, row in units.iterrows():
        unit = int(unit)
        shown = min(int(row[Units.n_top]), top_k)
        tile: str | None = None
        grids: list[tuple[ProjectionCell, ...]] = []
        top_images: tuple[TopImage, ...] = ()
        filter_cell: SheetCell | None = None
        patch_cells: tuple[SheetCell, ...] = ()
        if not row[Units.dead] and shown > 0:
            tile = patches_path(label, unit)
            writer.save(compose_grid(shown_cells(patches[unit, :shown], inputs.max_cell), 1,
                                     grid), out_dir / tile, quality=PATCH_QUALITY)
            patch_cells = tuple(SheetCell(tile, *cells[r], *sheet) for r in range(shown))
            if first is not None:
                filter_cell = _filter_cell(first, unit)
            for m, method in enumerate(methods):
                grids.append(_write_projections(
                    projections[m, unit, :shown], scales[m, unit, :shown], factor, grid,
                    label, unit, method, out_dir, writer, cells, sheet))
            top_images = tuple(
                _top_image(r, tables, tuple(g[r.rank] for g in grids), patch_cells[r.rank],
                           boxes[unit - task.start, r.rank], image_size,
                           sheets.thumb(unit, r.rank), sheets.heat(unit, r.rank), heat)
                for r in topk[unit].itertuples(index=False) if r.rank < shown)
        entry = _unit_entry(unit, row, tables, tile, top_images, selectivity.get(unit, ()),
                            histograms.get(unit, ((), 0)), first, filter_cell,
                            grids[0] if grids else (), patch_cells)
        if randomised is not None and grids:
            entry = dataclasses.replace(entry, randomised=tuple(
                _write_randomised(randomised, label, unit, method, factor, out_dir, writer)
                for method in methods))
        entries.append(entry)
    return entries


def _randomised_store(path: Path | None, label: str) -> Any:
    """The sanity stage's randomised projections, when it ran and holds ``label``."""
    if path is None or not Path(path).exists():
        return None
    from pipeline.sanity import RandomisedProjections

    store = RandomisedProjections(path)
    return store if label in store.layers else None


def _write_randomised(store: Any, label: str, unit: int, method: str, factor: int,
                      out_dir: Path, writer: ImageWriter) -> ProjectionCell | None:
    """A unit's top image projected through the randomised network, as a one-cell picture per
    display curve (the unit page shows it beside the trained one)."""
    values = store.projection(label, method, unit)
    if values is None:
        return None
    h, w = binned(np.asarray(values, np.float32)[None], factor).shape[1:3]
    cells, sheet = [(0, 0, w, h)], (w, h)
    return _write_projections(np.asarray(values, np.float32)[None], np.ones(1), factor, 1,
                              label, unit, f"{method}-randomised", out_dir, writer, cells,
                              sheet)[0]


def patches_path(label: str, unit: int) -> str:
    """A unit's grid of top image patches, relative to the atlas root (its first cell, at the
    top left, is the unit's thumbnail in search results)."""
    return f"tiles/{label}/{unit:04d}-patches.jpg"


def projections_path(label: str, unit: int, method: str, curve: str) -> str:
    """A unit's grid of projections with ``method`` through display ``curve`` (lossless)."""
    return f"tiles/{label}/{unit:04d}-{method}-{curve}.webp"


def _write_projections(values: Any, scales: Any, factor: int, grid: int, label: str, unit: int,
                       method: str, out_dir: Path, writer: ImageWriter,
                       cells: list[tuple[int, int, int, int]], sheet: tuple[int, int]
                       ) -> tuple[ProjectionCell, ...]:
    """Write a unit's projections with one method as one lossless grid per display curve;
    each projection's cell in both and its own display scale."""
    pictures = binned(np.asarray(values, np.float32), factor)
    shown_scales = [display_scale(cell) for cell in pictures]  # once for both curves
    own = [shown * float(scale) for shown, scale in
           zip(shown_scales, np.asarray(scales, np.float64), strict=True)]
    cells_by_curve = {}
    for curve in CURVES:
        path = projections_path(label, unit, method, curve)
        shown = shown_rgb(np.stack([curve_display(cell, curve, scale=scale)
                                    for cell, scale in zip(pictures, shown_scales,
                                                           strict=True)]))
        writer.save(compose_grid(shown, 1, grid), out_dir / path)
        cells_by_curve[curve] = [SheetCell(path, *cells[r], *sheet) for r in range(len(pictures))]
    return tuple(ProjectionCell(cells_by_curve["linear"][r], cells_by_curve["lifted"][r], own[r])
                 for r in range(len(pictures)))


def _layer_entry(layer: LayerInput, stored: ProjectedLayer, units: tuple[UnitEntry, ...],
                 image_size: int | None) -> LayerEntry:
    """One layer's entry from its units' entries, in unit order: weak units marked, the
    common scale of each method and the whole factors its pictures are enlarged by."""
    meta, first = layer.meta, layer.first
    weak = weak_units(np.array([u.peak for u in units]), np.array([u.frac_active for u in units]),
                      np.array([u.dead for u in units]))
    units = tuple(dataclasses.replace(u, weak=bool(w)) for u, w in zip(units, weak, strict=True))
    live = [entry for entry in units if entry.tile]
    preview = max(live, key=lambda entry: entry.peak).tile if live else None
    methods = max((len(image.projections) for u in live for image in u.top_images), default=0)
    common = tuple(common_scale([image.projections[m].scale for u in live
                                 for image in u.top_images]) for m in range(methods))
    cell_h = next((u.patches[0].h for u in live if u.patches), 0)  # (a filter fits the grid)
    return LayerEntry(label=layer.label, module=meta.module,
                      out_shape=(meta.channels, meta.height, meta.width),
                      receptive_field=meta.receptive_field[0], units=units,
                      preview=preview, first_layer=first is not None,
                      patch_is_image=_field_covers_image(stored.receptive_field, image_size),
                      filter_grid=first.grid if first else None,
                      filter_cells=_filter_cells(first, len(units)),
                      common_scales=common,
                      patch_cell=next(((c.w, c.h, c.sheet_w, c.sheet_h) for u in live
                                       for c in u.patches[:1]), (0, 0, 0, 0)),
                      tile_factor=tile_scale(cell_h, TILE_TARGET) if cell_h else 1,
                      page_factor=tile_scale(cell_h, PAGE_TARGET) if cell_h else 1)


def _field_covers_image(field: Any, image_size: int | None) -> bool:
    """Whether the patch is the whole input: only a field larger than the image along both
    sides is cropped to the whole image (``field_tile``); an equal one is cropped and padded."""
    if not image_size:
        return False
    return min(int(v) for v in field) > image_size


def shown_cells(pictures: np.ndarray, max_cell: int = MAX_CELL) -> np.ndarray:
    """uint8 pictures ``[n, h, w, C]`` in the input's channels (patches) as a tile's cells:
    binned to at most ``max_cell`` px (channel by channel), drawn in RGB (``shown_rgb``)."""
    return shown_rgb(fit_cells(np.asarray(pictures), max_cell))


def shown_projections(cells: np.ndarray, curve: str = "linear") -> np.ndarray:
    """Stored projections ``[n, h, w, C]`` (float, any scale) as a tile's cells: binned by the
    same whole factor as the patches (:func:`shown_cells`), then through the display ``curve``
    on each one's own scale, drawn in RGB."""
    pictures = np.asarray(cells, np.float32)
    factor = bin_factor(max(pictures.shape[1:3]), MAX_CELL) if pictures.size else 1
    return shown_rgb(np.stack([curve_display(cell, curve) for cell in binned(pictures, factor)]))


def _filter_cell(first: FirstLayer, unit: int) -> SheetCell | None:
    """A first-layer unit's filter: its cell of the filter grid (Figure 6), drawn in place of
    its projections (which are the filter, nine times)."""
    if first.grid is None or unit >= len(first.cells):
        return None
    return SheetCell(first.grid, *first.cells[unit], *first.grid_size)


def _filter_cells(first: FirstLayer | None, n_units: int) -> tuple[SheetCell, ...]:
    if first is None or first.grid is None:
        return ()
    return tuple(SheetCell(first.grid, *cell, *first.grid_size) for cell in first.cells[:n_units])


def _top_image(row: Any, tables: RunTables, projections: tuple[ProjectionCell, ...],
               patch: SheetCell, box: np.ndarray, image_size: int | None, thumb: SheetCell | None,
               heat: SheetCell | None, heat_box: Fractions | None) -> TopImage:
    image_id, rank = int(row.image_id), int(row.rank)
    pred = int(tables.predictions[image_id])
    fraction = None
    if image_size and box[2] > box[0]:  # missing boxes are stored as -1
        top, left, bottom, right = (float(np.clip(v / image_size, 0.0, 1.0)) for v in box)
        fraction = (top, left, bottom, right)
    return TopImage(
        rank=rank, value=float(row.value),
        file=str(tables.manifest[Manifest.path].iat[image_id]),
        true_class=tables.classes[int(tables.labels[image_id])],
        pred_class=tables.classes[pred] if 0 <= pred < len(tables.classes) else None,
        projection=projections[0] if projections else None, patch=patch,
        thumb=thumb, box=fraction, projections=projections, heat=heat,
        heat_box=heat_box)


Classes = tuple[tuple[int, str, int], ...]  # (class index, name, count), most first
Bins = tuple[tuple[float, float, int], ...]  # (low, high, count) of a histogram


def _by_unit(units: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Each unit of ``units`` with the positions of its rows, in table order."""
    if not len(units):  # a range of units none of which has a row (no positive top image)
        return []
    order = np.argsort(units, kind="stable")
    found, starts = np.unique(units[order], return_index=True)
    return [(int(unit), rows) for unit, rows in zip(found, np.split(order, starts[1:]),
                                                   strict=True)]


def _unit_classes(table: pd.DataFrame, names: Sequence[str]) -> dict[int, Classes]:
    """Each unit's classes among its top images, the most frequent first (ties: the lower
    class index). A whole layer's table at once: a sort per unit was a fifth of a unit's
    page data."""
    classes = table[Selectivity.class_index].to_numpy(np.int64)
    counts = table[Selectivity.count].to_numpy(np.int64)
    found = {}
    for unit, rows in _by_unit(table[UnitKey.unit].to_numpy()):
        rows = rows[np.lexsort((classes[rows], -counts[rows]))]
        found[unit] = tuple((int(c), names[int(c)], int(n))
                            for c, n in zip(classes[rows], counts[rows], strict=True))
    return found


def _unit_histograms(table: pd.DataFrame) -> dict[int, tuple[Bins, int]]:
    """Each unit's histogram bins in table order, without the bin that holds zero, and the
    count of that bin (dead maps, shown apart)."""
    low, high = (table[c].to_numpy() for c in (Histograms.low, Histograms.high))
    counts = table[Histograms.count].to_numpy(np.int64)
    zero = (low < 0) & (high > 0)
    found = {}
    for unit, rows in _by_unit(table[UnitKey.unit].to_numpy()):
        kept = rows[~zero[rows]]
        found[unit] = (tuple((float(lo), float(hi), int(n)) for lo, hi, n in
                             zip(low[kept], high[kept], counts[kept], strict=True)),
                       int(counts[rows[zero[rows]]].sum()))
    return found


def _unit_entry(unit: int, row: pd.Series, tables: RunTables, tile: str | None,
                top_images: tuple[TopImage, ...], classes: Classes,
                histogram: tuple[Bins, int], first: FirstLayer | None = None,
                filter_cell: SheetCell | None = None, grid: tuple[ProjectionCell, ...] = (),
                patches: tuple[SheetCell, ...] = ()) -> UnitEntry:
    bins, n_zero = histogram
    quantiles = tuple((name, float(row[name])) for name in row.index
                      if name.startswith("q") and name[1:].isdigit())
    top_class = int(row[Units.top_class])
    top_name = tables.classes[top_class] if top_class >= 0 else None
    share, counted = float(row[Units.top_class_share]), int(row[Units.n_selectivity])
    prior = float(tables.priors[top_class]) if top_class >= 0 else 1.0
    named = top_name if dominant_class(share, counted, prior) else None
    return UnitEntry(
        unit=unit, dead=bool(row[Units.dead]), peak=float(row[Units.peak]),
        top_class=top_name,
        n_images=len(top_images) if tile else 0, tile=tile,
        top_class_share=share, class_entropy=float(row[Units.class_entropy]),
        frac_active=float(row[Units.frac_active]), mean_max=float(row[Units.mean_max]),
        std_max=float(row[Units.std_max]), quantiles=quantiles, n_selectivity=counted,
        classes=classes, histogram=bins,
        n_zero=n_zero, top_images=top_images, named_class=named,
        filter_scale=float(first.scales[unit]) if first is not None else None,
        filter=filter_cell, grid=grid, patches=patches)


def skipped_images(table: pd.DataFrame) -> tuple[SkippedImage, ...]:
    """The first unreadable images, with paths relative to the data root."""
    return tuple(SkippedImage(str(path), str(reason)) for path, reason in
                 zip(table[Skipped.path][:SKIPPED_SHOWN], table[Skipped.reason][:SKIPPED_SHOWN],
                     strict=True))
