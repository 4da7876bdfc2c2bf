"""Gathering the atlas: every table and projection of a run turned into images and a context.

Images are written here (tiles, thumbnail and activation-map sheets, the filter grid);
:mod:`pipeline.atlas.render` only writes HTML. Files per unit are kept to one per method: the
Figure 2 tile (projections with the first method, and the patches), which the unit page also
shows cell by cell, and for every further method a grid of its projections; thumbnails and
activation maps of the top images are grouped ``THUMB_GROUP`` units to a sheet. Projections are
turned into pixels here, from the exact values the deconv stage stored
(:func:`pipeline.interp.display.to_display`). Image encoding runs on a small thread pool
(Pillow releases the GIL while it encodes).
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atlas.context import Crop, LayerEntry, SkippedImage, TopImage, UnitEntry
from pipeline.atlas.first_layer import FirstLayer
from pipeline.atlas.tiles import (
    compose_filter_tile,
    compose_grid,
    compose_unit_tile,
    filter_tile_cell,
    fit_cells,
    grid_side,
    image_format,
    map_sheet,
    pooled_maps,
    projection_grid_width,
    save_image,
    sheet_cell,
    sheet_size,
    thumb_sheet,
    tile_cells,
    tile_scale,
)
from pipeline.interp.display import to_display

THUMB_GROUP = 32  # units per thumbnail sheet
MAX_CELL = 64  # px: larger receptive fields are shrunk in the tiles (size of a shared atlas:
# with full-colour JPEG, AlexNet's atlas is 58 MB at 64 px, 79 MB at 80 px)
TILE_QUALITY = 65  # JPEG quality of tiles (PNG tiles are lossless)
THUMB_QUALITY = 70  # the thumbnails only place the receptive field in the image
THUMB_SIDE = 48  # px per thumbnail in the sheets, unless the whole input is that small (the
# demo's 64 px), whose thumbnails are kept as stored: the input at its full resolution
SKIPPED_SHOWN = 50  # unreadable images listed on the index (all are in skipped.parquet)
CLASSES_SHOWN = 10  # classes in a unit's class-distribution chart
# A card names a class only when the data support it: at least this share of the unit's top
# images, at least CHANCE_FACTOR times the share the class has among all analysed images (what
# a unit blind to classes would see; capped at MAX_CHANCE_SHARE so that a data set of two
# classes can name one), and at least MIN_NAMED images counted.
DOMINANT_SHARE = 0.5
CHANCE_FACTOR = 3.0
MAX_CHANCE_SHARE = 0.9
MIN_NAMED = 5


def dominant_class(share: float, n_counted: int, prior: float) -> bool:
    """Whether a unit's most frequent class (``share`` of its ``n_counted`` top images, and
    ``prior`` of all analysed images) clearly dominates its top images."""
    if n_counted < MIN_NAMED:
        return False
    return share >= DOMINANT_SHARE and share >= min(CHANCE_FACTOR * prior, MAX_CHANCE_SHARE)


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
        labels = self.labels[(self.predictions >= 0) & (self.labels >= 0)]
        counts = np.bincount(labels, minlength=len(self.classes))[:len(self.classes)]
        return counts / max(1, counts.sum())


class ImageWriter:
    """Saves images on a thread pool; ``close`` waits for all and re-raises the first error."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[Future] = []

    def save(self, image: Any, path: Path, quality: int = 85, full_colour: bool = True) -> None:
        self._pending.append(self._pool.submit(save_image, image, path, quality, full_colour))
        if len(self._pending) > 64:  # bound the images waiting in memory
            self._pending.pop(0).result()

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown()


def layer_entry(label: str, meta: dict, group: Any, tables: RunTables, out_dir: Path,
                writer: ImageWriter, top_k: int, image_size: int | None,
                first: FirstLayer | None = None) -> LayerEntry:
    """Write one layer's tiles and sheets and describe its units. ``first``: this layer's
    projections are the first convolution's filters, shown once per unit (the paper's layer 1)."""
    # Read unit by unit (chunks are per unit): a VGG layer's projections are gigabytes.
    projections, patches = group["projections"], group["patches"]
    methods = list(group.attrs["methods"])
    boxes = group["boxes"][:]
    grid = grid_side(top_k)
    cell_hw = fit_cells(patches[:1, 0], MAX_CELL).shape[1:3] if patches.shape[0] else (1, 1)
    scale = tile_scale(cell_hw[0])
    suffix = image_format(scale)
    geometry = tile_cells(top_k, cell_hw, scale, grid)
    units = tables.units[tables.units["layer"] == label].set_index("unit").sort_index()
    topk = {unit: rows for unit, rows in
            tables.topk[tables.topk["layer"] == label].groupby("unit")}
    selectivity = {unit: rows for unit, rows in
                   tables.selectivity[tables.selectivity["layer"] == label].groupby("unit")}
    histograms = {unit: rows for unit, rows in
                  tables.histograms[tables.histograms["layer"] == label].groupby("unit")}
    sheets = _write_sheets(label, group, out_dir, writer, image_size)
    heat_box = _heat_box(group.attrs.get("map_extent"), image_size)

    entries = []
    for unit, row in units.iterrows():
        unit = int(unit)
        shown = min(int(row["n_top"]), top_k)
        tile, extra, top_images, filter_crop = None, [], (), None
        if not row["dead"] and shown > 0:
            tile = f"tiles/{label}/{unit:04d}{suffix}"
            unit_patches = fit_cells(patches[unit, :shown], MAX_CELL)
            if first is not None:
                filter_crop = _write_filter_tile(first, unit, unit_patches, scale, grid, geometry,
                                                 out_dir / tile, writer, tile)
            else:
                writer.save(compose_unit_tile(_shown(projections[0, unit, :shown]),
                                              unit_patches, scale=scale, grid=grid),
                            out_dir / tile, quality=TILE_QUALITY)
            for m, method in enumerate(methods[1:] if first is None else [], start=1):
                path = f"tiles/{label}/{unit:04d}-{method}{suffix}"
                writer.save(compose_grid(_shown(projections[m, unit, :shown]), scale, grid),
                            out_dir / path, quality=TILE_QUALITY)
                extra.append(path)
            top_images = tuple(
                _top_image(r, tables, tile, extra, geometry, boxes[unit, r.rank], image_size,
                           sheets.thumb(unit, r.rank), sheets.heat(unit, r.rank), heat_box)
                for r in topk[unit].itertuples(index=False) if r.rank < shown)
        entries.append(_unit_entry(unit, row, tables, tile, top_images,
                                   selectivity.get(unit), histograms.get(unit), first,
                                   filter_crop))
    live = [entry for entry in entries if entry.tile]
    preview = max(live, key=lambda entry: entry.peak).tile if live else None
    return LayerEntry(label=label, module=str(meta["module"]),
                      out_shape=(int(meta["channels"]), int(meta["height"]), int(meta["width"])),
                      receptive_field=int(meta["receptive_field"][0]), units=tuple(entries),
                      preview=preview, first_layer=first is not None,
                      patch_is_image=_field_covers_image(group.attrs["receptive_field"],
                                                         image_size),
                      filter_grid=first.grid if first else None,
                      filter_cells=_filter_cells(first, len(entries)))


def _field_covers_image(field: Any, image_size: int | None) -> bool:
    """Whether the patch is the whole input: only a field larger than the image along both
    sides is cropped to the whole image (``crop_tile``); an equal one is cropped and padded."""
    return bool(image_size) and min(int(v) for v in field) > image_size


def _shown(cells: np.ndarray) -> np.ndarray:
    """Stored projections (float, any scale) as display pixels, shrunk like the patches."""
    return fit_cells(np.stack([to_display(cell) for cell in np.asarray(cells, np.float32)]),
                     MAX_CELL)


def _write_filter_tile(first: FirstLayer, unit: int, patches: np.ndarray, scale: int, grid: int,
                       geometry, path: Path, writer: ImageWriter, tile: str) -> Crop:
    """Write a layer-1 tile (the filter once, beside the patches); return the filter's crop."""
    writer.save(compose_filter_tile(first.filters[unit], patches, scale, grid), path,
                quality=TILE_QUALITY)
    (tile_w, tile_h), _, _ = geometry
    x, y, w, h, _ = filter_tile_cell(patches.shape[1:3], first.filters.shape[1:3], scale, grid)
    return Crop(tile, x, y, w, h, tile_w, tile_h)


def _filter_cells(first: FirstLayer | None, n_units: int) -> tuple[Crop, ...]:
    if first is None or first.grid is None:
        return ()
    return tuple(Crop(first.grid, *cell, *first.grid_size) for cell in first.cells[:n_units])


class _Sheets:
    """Crops of one layer's thumbnail and activation-map sheets, THUMB_GROUP units a sheet."""

    def __init__(self, label: str, units: int, top_k: int, thumb_side: int | None,
                 map_side: int | None) -> None:
        self.label, self.units, self.top_k = label, units, top_k
        self.thumb_side, self.map_side = thumb_side, map_side

    def _crop(self, path: str, unit: int, rank: int, side: int) -> Crop:
        rows = min(THUMB_GROUP, self.units - unit // THUMB_GROUP * THUMB_GROUP)
        x, y = sheet_cell(unit % THUMB_GROUP, rank, side)
        return Crop(path, x, y, side, side, *sheet_size(rows, self.top_k, side))

    def thumb(self, unit: int, rank: int) -> Crop | None:
        if self.thumb_side is None:
            return None
        path = _sheet_path("thumbs", self.label, unit // THUMB_GROUP, ".jpg")
        return self._crop(path, unit, rank, self.thumb_side)

    def heat(self, unit: int, rank: int) -> Crop | None:
        if self.map_side is None:
            return None
        path = _sheet_path("maps", self.label, unit // THUMB_GROUP, ".png")
        return self._crop(path, unit, rank, self.map_side)


def _thumb_side(stored: int, image_size: int | None) -> int:
    """Side of a thumbnail in the sheets (see THUMB_SIDE)."""
    if image_size and image_size <= stored:
        return stored
    return min(THUMB_SIDE, stored)


def _write_sheets(label: str, group: Any, out_dir: Path, writer: ImageWriter,
                  image_size: int | None) -> _Sheets:
    """Write the layer's thumbnail and activation-map sheets."""
    thumbs = group["thumbs"] if "thumbs" in group else None
    maps = group["maps"] if "maps" in group else None
    units, top_k = group["patches"].shape[:2]
    for start in range(0, units, THUMB_GROUP):
        number = start // THUMB_GROUP
        if thumbs is not None:
            writer.save(thumb_sheet(thumbs[start:start + THUMB_GROUP],
                                    _thumb_side(thumbs.shape[2], image_size)),
                        out_dir / _sheet_path("thumbs", label, number, ".jpg"),
                        quality=THUMB_QUALITY, full_colour=False)
        if maps is not None:
            writer.save(map_sheet(np.asarray(maps[start:start + THUMB_GROUP])),
                        out_dir / _sheet_path("maps", label, number, ".png"))
    thumb_side = _thumb_side(thumbs.shape[2], image_size) if thumbs is not None else None
    map_side = max(pooled_maps(np.zeros((1, 1, *maps.shape[2:]))).shape[2:]) \
        if maps is not None else None
    return _Sheets(label, units, top_k, thumb_side, map_side)


def _heat_box(extent: Any, image_size: int | None) -> tuple[float, ...] | None:
    """Where the activation map lies over the image, as fractions of its side."""
    if not extent or not image_size:
        return None
    return tuple(float(v) / image_size for v in extent)


def _sheet_path(kind: str, label: str, group: int, suffix: str) -> str:
    return f"{kind}/{label}/{group:03d}{suffix}"


def _top_image(row: Any, tables: RunTables, tile: str, extra: list[str], geometry: Any,
               box: np.ndarray, image_size: int | None, thumb: Crop | None, heat: Crop | None,
               heat_box: tuple[float, ...] | None) -> TopImage:
    image_id, rank = int(row.image_id), int(row.rank)
    pred = int(tables.predictions[image_id])
    (tile_w, tile_h), proj_cells, patch_cells = geometry
    projection = Crop(tile, *proj_cells[rank], tile_w, tile_h)
    sheets = tuple(Crop(path, *proj_cells[rank], projection_grid_width(tile_w), tile_h)
                   for path in extra)
    fraction = None
    if image_size and box[2] > box[0]:  # missing boxes are stored as -1
        top, left, bottom, right = (float(np.clip(v / image_size, 0.0, 1.0)) for v in box)
        fraction = (top, left, bottom, right)
    return TopImage(
        rank=rank, value=float(row.value),
        file=str(tables.manifest["path"].iat[image_id]),
        true_class=tables.classes[int(tables.labels[image_id])],
        pred_class=tables.classes[pred] if 0 <= pred < len(tables.classes) else None,
        projection=projection, patch=Crop(tile, *patch_cells[rank], tile_w, tile_h),
        thumb=thumb, box=fraction, projections=(projection, *sheets), heat=heat,
        heat_box=heat_box)


def _unit_entry(unit: int, row: pd.Series, tables: RunTables, tile: str | None,
                top_images: tuple[TopImage, ...], selectivity: pd.DataFrame | None,
                histogram: pd.DataFrame | None, first: FirstLayer | None = None,
                filter_crop: Crop | None = None) -> UnitEntry:
    classes: tuple[tuple[int, str, int], ...] = ()
    if selectivity is not None:
        ordered = selectivity.sort_values(["count", "class"], ascending=[False, True])
        classes = tuple((int(c), tables.classes[int(c)], int(n)) for c, n in
                        zip(ordered["class"], ordered["count"], strict=True))
    bins: tuple[tuple[float, float, int], ...] = ()
    n_zero = 0
    if histogram is not None:
        zero = (histogram["low"] < 0) & (histogram["high"] > 0)
        n_zero = int(histogram.loc[zero, "count"].sum())
        bins = tuple((float(lo), float(hi), int(n)) for lo, hi, n in
                     zip(histogram.loc[~zero, "low"], histogram.loc[~zero, "high"],
                         histogram.loc[~zero, "count"], strict=True))
    quantiles = tuple((name, float(row[name])) for name in row.index
                      if name.startswith("q") and name[1:].isdigit())
    top_class = int(row["top_class"])
    top_name = tables.classes[top_class] if top_class >= 0 else None
    share, counted = float(row.get("top_class_share", 0.0)), int(row.get("n_selectivity", 0))
    prior = float(tables.priors[top_class]) if top_class >= 0 else 1.0
    named = top_name if dominant_class(share, counted, prior) else None
    return UnitEntry(
        unit=unit, dead=bool(row["dead"]), peak=float(row["peak"]),
        top_class=top_name,
        n_images=len(top_images) if tile else 0, tile=tile,
        top_class_share=float(row.get("top_class_share", 0.0)),
        class_entropy=float(row.get("class_entropy", 0.0)),
        frac_active=float(row.get("frac_active", 0.0)), mean_max=float(row["mean_max"]),
        std_max=float(row["std_max"]), quantiles=quantiles,
        n_selectivity=int(row.get("n_selectivity", 0)), classes=classes, histogram=bins,
        n_zero=n_zero, top_images=top_images, named_class=named,
        filter_scale=float(first.scales[unit]) if first is not None else None,
        filter=filter_crop)


def skipped_images(table: pd.DataFrame) -> tuple[SkippedImage, ...]:
    """The first unreadable images, with paths relative to the data root."""
    return tuple(SkippedImage(str(path), str(reason)) for path, reason in
                 zip(table["path"][:SKIPPED_SHOWN], table["reason"][:SKIPPED_SHOWN], strict=True))
