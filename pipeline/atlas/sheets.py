"""Thumbnail and activation-map sheets: the top images of THUMB_GROUP units in one file each.

One file per unit and kind would be thousands of small files in a shared atlas; a sheet holds
THUMB_GROUP units (rows) by top-k images (columns), and a page shows one cell of it by CSS
(:class:`pipeline.atlas.context.SheetCell`). A sheet is written whole by one task of the render
stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atlas.context import SheetCell
from pipeline.atlas.tiles import map_sheet, pooled_maps, sheet_cell, sheet_size, thumb_sheet
from pipeline.atlas.writer import ImageWriter

THUMB_GROUP = 32  # units per thumbnail sheet
THUMB_QUALITY = 70  # the thumbnails only place the receptive field in the image
THUMB_SIDE = 48  # px per thumbnail in the sheets, unless the whole input is that small (the
# demo's 64 px), whose thumbnails are kept as stored: the input at its full resolution


class Sheets:
    """Crops of one layer's thumbnail and activation-map sheets, THUMB_GROUP units a sheet."""

    def __init__(self, label: str, units: int, top_k: int, thumb_side: int | None,
                 map_side: int | None) -> None:
        self.label, self.units, self.top_k = label, units, top_k
        self.thumb_side, self.map_side = thumb_side, map_side

    def _cell(self, path: str, unit: int, rank: int, side: int) -> SheetCell:
        rows = min(THUMB_GROUP, self.units - unit // THUMB_GROUP * THUMB_GROUP)
        x, y = sheet_cell(unit % THUMB_GROUP, rank, side)
        return SheetCell(path, x, y, side, side, *sheet_size(rows, self.top_k, side))

    def thumb(self, unit: int, rank: int) -> SheetCell | None:
        if self.thumb_side is None:
            return None
        path = sheet_path("thumbs", self.label, unit // THUMB_GROUP, ".jpg")
        return self._cell(path, unit, rank, self.thumb_side)

    def heat(self, unit: int, rank: int) -> SheetCell | None:
        if self.map_side is None:
            return None
        path = sheet_path("maps", self.label, unit // THUMB_GROUP, ".png")
        return self._cell(path, unit, rank, self.map_side)


def _thumb_side(stored: int, image_size: int | None) -> int:
    """Side of a thumbnail in the sheets (see THUMB_SIDE)."""
    if image_size and image_size <= stored:
        return stored
    return min(THUMB_SIDE, stored)


def write_sheets(label: str, group: Any, out_dir: Path, writer: ImageWriter,
                 image_size: int | None, start: int, stop: int) -> Sheets:
    """Write the layer's thumbnail and activation-map sheets of units ``start`` to ``stop``
    (``start`` a multiple of THUMB_GROUP); the cells of the layer's sheets."""
    thumbs = group["thumbs"] if "thumbs" in group else None
    maps = group["maps"] if "maps" in group else None
    units, top_k = group["patches"].shape[:2]
    for sheet_start in range(start, min(stop, units), THUMB_GROUP):
        number = sheet_start // THUMB_GROUP
        if thumbs is not None:
            writer.save(thumb_sheet(thumbs[sheet_start:sheet_start + THUMB_GROUP],
                                    _thumb_side(thumbs.shape[2], image_size)),
                        out_dir / sheet_path("thumbs", label, number, ".jpg"),
                        quality=THUMB_QUALITY, full_colour=False)
        if maps is not None:
            writer.save(map_sheet(np.asarray(maps[sheet_start:sheet_start + THUMB_GROUP])),
                        out_dir / sheet_path("maps", label, number, ".png"))
    thumb_side = _thumb_side(thumbs.shape[2], image_size) if thumbs is not None else None
    map_side = max(pooled_maps(np.zeros((1, 1, *maps.shape[2:]))).shape[2:]) \
        if maps is not None else None
    return Sheets(label, units, top_k, thumb_side, map_side)


def heat_box(extent: Any, image_size: int | None) -> tuple[float, float, float, float] | None:
    """Where the activation map lies over the image (``extent``: top, left, bottom, right in
    input px), as fractions of its side."""
    if not extent or not image_size:
        return None
    top, left, bottom, right = (float(v) / image_size for v in extent)
    return top, left, bottom, right


def sheet_path(kind: str, label: str, group: int, suffix: str) -> str:
    """A sheet's path relative to the atlas root: ``thumbs/conv3/002.jpg``."""
    return f"{kind}/{label}/{group:03d}{suffix}"
