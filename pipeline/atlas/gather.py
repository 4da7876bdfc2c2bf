"""Gathering the atlas: every table and projection of a run turned into images and a context.

Images are written here (tiles, thumbnail sheets, the filter grid); :mod:`pipeline.atlas.render`
only writes HTML. Files per unit are kept to one: the Figure 2 tile, which the unit page also
shows cell by cell; thumbnails of the top images are grouped ``THUMB_GROUP`` units to a sheet.
Image encoding runs on a small thread pool (Pillow releases the GIL while it encodes).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atlas.context import Crop, LayerEntry, SkippedImage, TopImage, UnitEntry
from pipeline.atlas.tiles import (
    compose_unit_tile,
    fit_cells,
    grid_side,
    image_format,
    save_image,
    thumb_sheet,
    tile_cells,
    tile_scale,
)

THUMB_GROUP = 32  # units per thumbnail sheet
MAX_CELL = 96  # px: larger receptive fields are shrunk in the tiles (size of a shared atlas)
TILE_QUALITY = 75  # JPEG quality of tiles (PNG tiles are lossless)
THUMB_QUALITY = 70  # the thumbnails only place the receptive field in the image
THUMB_SIDE = 48  # px per thumbnail in the sheets
SKIPPED_SHOWN = 50  # unreadable images listed on the index (all are in skipped.parquet)
CLASSES_SHOWN = 10  # classes in a unit's class-distribution chart


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


class ImageWriter:
    """Saves images on a thread pool; ``close`` waits for all and re-raises the first error."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[Future] = []

    def save(self, image: Any, path: Path, quality: int = 85) -> None:
        self._pending.append(self._pool.submit(save_image, image, path, quality))
        if len(self._pending) > 64:  # bound the images waiting in memory
            self._pending.pop(0).result()

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown()


def layer_entry(label: str, meta: dict, group: Any, tables: RunTables, out_dir: Path,
                writer: ImageWriter, top_k: int, image_size: int | None) -> LayerEntry:
    """Write one layer's tiles and thumbnail sheets and describe its units."""
    # Read unit by unit (chunks are per unit): a VGG layer's projections are gigabytes.
    projections, patches = group["projections"], group["patches"]
    boxes = group["boxes"][:]
    thumbs = group["thumbs"] if "thumbs" in group else None
    grid = grid_side(top_k)
    cell_hw = fit_cells(projections[:1, 0], MAX_CELL).shape[1:3] if projections.shape[0] \
        else (1, 1)
    scale = tile_scale(cell_hw[0])
    suffix = image_format(scale)
    (tile_w, tile_h), proj_cells, patch_cells = tile_cells(top_k, cell_hw, scale, grid)
    units = tables.units[tables.units["layer"] == label].set_index("unit").sort_index()
    topk = {unit: rows for unit, rows in
            tables.topk[tables.topk["layer"] == label].groupby("unit")}
    selectivity = {unit: rows for unit, rows in
                   tables.selectivity[tables.selectivity["layer"] == label].groupby("unit")}
    histograms = {unit: rows for unit, rows in
                  tables.histograms[tables.histograms["layer"] == label].groupby("unit")}
    if thumbs is not None:
        for start in range(0, thumbs.shape[0], THUMB_GROUP):
            writer.save(thumb_sheet(thumbs[start:start + THUMB_GROUP], THUMB_SIDE),
                        out_dir / _thumb_path(label, start // THUMB_GROUP), quality=THUMB_QUALITY)

    entries = []
    for unit, row in units.iterrows():
        unit = int(unit)
        shown = min(int(row["n_top"]), top_k)
        tile = None
        top_images: tuple[TopImage, ...] = ()
        if not row["dead"] and shown > 0:
            tile = f"tiles/{label}/{unit:04d}{suffix}"
            writer.save(compose_unit_tile(fit_cells(projections[unit, :shown], MAX_CELL),
                                          fit_cells(patches[unit, :shown], MAX_CELL),
                                          scale=scale, grid=grid), out_dir / tile,
                        quality=TILE_QUALITY)
            top_images = tuple(
                _top_image(r, tables, tile, (tile_w, tile_h), proj_cells[r.rank],
                           patch_cells[r.rank], boxes[unit, r.rank], image_size,
                           _thumb_crop(label, unit, r.rank, thumbs, top_k))
                for r in topk[unit].itertuples(index=False) if r.rank < shown)
        entries.append(_unit_entry(unit, row, tables, tile, top_images,
                                   selectivity.get(unit), histograms.get(unit)))
    live = [entry for entry in entries if entry.tile]
    preview = max(live, key=lambda entry: entry.peak).tile if live else None
    return LayerEntry(label=label, module=str(meta["module"]),
                      out_shape=(int(meta["channels"]), int(meta["height"]), int(meta["width"])),
                      receptive_field=int(meta["receptive_field"][0]), units=tuple(entries),
                      preview=preview)


def _thumb_path(label: str, group: int) -> str:
    return f"thumbs/{label}/{group:03d}.jpg"


def _thumb_crop(label: str, unit: int, rank: int, thumbs: np.ndarray | None,
                top_k: int) -> Crop | None:
    if thumbs is None:
        return None
    side = min(THUMB_SIDE, thumbs.shape[2])
    rows = min(THUMB_GROUP, thumbs.shape[0] - unit // THUMB_GROUP * THUMB_GROUP)
    return Crop(_thumb_path(label, unit // THUMB_GROUP), rank * side,
                unit % THUMB_GROUP * side, side, side, thumbs.shape[1] * side, rows * side)


def _top_image(row: Any, tables: RunTables, tile: str, tile_size: tuple[int, int],
               proj_cell: tuple[int, int, int, int], patch_cell: tuple[int, int, int, int],
               box: np.ndarray, image_size: int | None, thumb: Crop | None) -> TopImage:
    image_id = int(row.image_id)
    pred = int(tables.predictions[image_id])

    def crop(cell: tuple[int, int, int, int]) -> Crop:
        return Crop(tile, *cell, *tile_size)

    fraction = None
    if image_size and box[2] > box[0]:  # missing boxes are stored as -1
        top, left, bottom, right = (float(np.clip(v / image_size, 0.0, 1.0)) for v in box)
        fraction = (top, left, bottom, right)
    return TopImage(
        rank=int(row.rank), value=float(row.value),
        file=str(tables.manifest["path"].iat[image_id]),
        true_class=tables.classes[int(tables.labels[image_id])],
        pred_class=tables.classes[pred] if 0 <= pred < len(tables.classes) else None,
        projection=crop(proj_cell), patch=crop(patch_cell), thumb=thumb, box=fraction)


def _unit_entry(unit: int, row: pd.Series, tables: RunTables, tile: str | None,
                top_images: tuple[TopImage, ...], selectivity: pd.DataFrame | None,
                histogram: pd.DataFrame | None) -> UnitEntry:
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
    return UnitEntry(
        unit=unit, dead=bool(row["dead"]), peak=float(row["peak"]),
        top_class=tables.classes[top_class] if top_class >= 0 else None,
        n_images=len(top_images) if tile else 0, tile=tile,
        top_class_share=float(row.get("top_class_share", 0.0)),
        class_entropy=float(row.get("class_entropy", 0.0)),
        frac_active=float(row.get("frac_active", 0.0)), mean_max=float(row["mean_max"]),
        std_max=float(row["std_max"]), quantiles=quantiles,
        n_selectivity=int(row.get("n_selectivity", 0)), classes=classes, histogram=bins,
        n_zero=n_zero, top_images=top_images)


def skipped_images(table: pd.DataFrame) -> tuple[SkippedImage, ...]:
    """The first unreadable images, with paths relative to the data root."""
    return tuple(SkippedImage(str(path), str(reason)) for path, reason in
                 zip(table["path"][:SKIPPED_SHOWN], table["reason"][:SKIPPED_SHOWN], strict=True))
