"""Figure 4 in the atlas: how each unit's strongest activation changes over training.

Pages: ``evolution/<layer>.html``, one per layer, a row per unit and a column per snapshot
(the paper's layout), linked to each other and to the unit pages; each unit page gets its own
strip (:class:`~pipeline.atlas.context.SnapshotCell`), each layer page a link.

Images: the projections stored by the evolution stage, shown with the atlas's contrast
(:func:`pipeline.interp.display.to_display`, zero at mid-grey), shrunk and enlarged like the Figure
2 tiles and drawn in the input's channels like them (:mod:`pipeline.atlas.channels`; the preview,
channels 1-3 of 4), packed ``STRIP_GROUP`` units to a sheet, ``evolution/<layer>/<group>.png``
(``.jpg`` when not enlarged): a row per unit and a column per snapshot, so a sheet is itself a
piece of Figure 4 and a unit page loads one file. ``evolution/preview.png`` (the index card) shows
the strongest unit of every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from pipeline.atlas.channels import shown_rgb
from pipeline.atlas.context import (
    AtlasContext,
    PageExtras,
    PageLink,
    ProjectionCell,
    SheetCell,
    SnapshotCell,
)
from pipeline.atlas.gather import MAX_CELL, RunTables, shown_projections
from pipeline.atlas.render import unit_path, write_page
from pipeline.atlas.tiles import BACKGROUND, GUTTER, bin_factor, binned, fit_cells, tile_scale
from pipeline.atlas.writer import ImageWriter
from pipeline.experiments.evolution_run import EvolutionLayerMeta, EvolutionMeta
from pipeline.interp.display import CURVES, curve_display

PAGES_DIR = "evolution"
STRIP_GROUP = 32  # units per sheet
PREVIEW_CELL = 40  # px per cell of the index card's picture
PREVIEW_ASPECT = 2.0  # width / height the card's picture comes closest to


@dataclass(frozen=True)
class StripRow:
    """One unit's row on a layer's evolution page."""

    unit: int
    href: str  # its unit page, relative to the atlas root
    cells: tuple[SnapshotCell, ...]
    files: tuple[str | None, ...]  # the image of each cell's activation (None: silent)


@dataclass(frozen=True)
class LayerStrips:
    """A layer's evolution page: its rows, and the shape of a cell."""

    label: str
    rows: tuple[StripRow, ...]
    cell_hw: tuple[int, int]  # of a shown cell, in sheet pixels
    receptive_field: int
    factor: int = 1  # whole factor the page enlarges the cells by


def main_page(store_path: Path, context: AtlasContext) -> str:
    """The page the header links (the first layer's strips), read from the store's attributes
    before anything is written (``pipeline.atlas.navigation``)."""
    import zarr

    shown = {layer.label for layer in context.layers}
    meta = EvolutionMeta.from_attrs(zarr.open_group(store_path, mode="r").attrs)
    labels = [label for label in meta.layers if label in shown]
    return f"{PAGES_DIR}/{labels[0]}.html" if labels else "index.html"


def evolution_pages(store_path: Path, context: AtlasContext, tables: RunTables,
                    out_dir: Path) -> PageExtras:
    """Write the evolution pages and sheets of ``evolution.zarr`` into the atlas ``out_dir``;
    return the index card, each unit's strip and each layer's page."""
    import zarr

    store = zarr.open_group(store_path, mode="r")
    meta = EvolutionMeta.from_attrs(store.attrs)
    snapshots = list(meta.snapshots)
    entries = {layer.label: layer for layer in context.layers}
    labels = [label for label in meta.layers if label in entries]
    writer = ImageWriter()
    try:
        layers = [_layer_strips(label, store[label], snapshots, tables, out_dir, writer)
                  for label in labels]
        preview = _write_preview(store, labels, out_dir, writer)
    finally:
        writer.close()
    pages = {strips.label: f"{PAGES_DIR}/{strips.label}.html" for strips in layers}
    for i, strips in enumerate(layers):
        before = layers[i - 1].label if i > 0 else None
        after = layers[i + 1].label if i + 1 < len(layers) else None
        write_page(out_dir, pages[strips.label], "evolution.html", context,
                   current=entries[strips.label], strips=strips, snapshots=snapshots,
                   pages=[(label, pages[label]) for label in labels],
                   n_searched=meta.n_images, prev_layer=before,
                   next_layer=after,
                   prev_link=f"../{quote(pages[before])}" if before else None,
                   next_link=f"../{quote(pages[after])}" if after else None)
    first = f" ({snapshots[0]} to {snapshots[-1]})" if len(snapshots) > 1 else ""
    note = (f"Each unit's strongest activation at {len(snapshots)} training "
            f"snapshot{'s' if len(snapshots) != 1 else ''}{first}, projected.")
    link = PageLink("Feature evolution (Figure 4)", pages[labels[0]] if labels else "index.html",
                    note, image=preview)
    unit_strips = {(layer.label, row.unit): row.cells for layer in layers for row in layer.rows}
    return PageExtras(link=link, unit_evolution=unit_strips, layer_pages=pages)


def _layer_strips(label: str, group, snapshots: list[str], tables: RunTables, out_dir: Path,
                  writer: ImageWriter) -> LayerStrips:
    """Write one layer's sheets; its rows, each cell a crop of them."""
    values, image_ids = group["value"][:], group["image_id"][:]
    projections = group["projections"]
    n_snapshots, units = values.shape
    layer_meta = EvolutionLayerMeta.from_attrs(group.attrs)
    tile = layer_meta.tile
    channels = int(projections.shape[-1])
    cell_hw = shown_rgb(fit_cells(np.zeros((1, *tile, channels), np.uint8), MAX_CELL)
                        ).shape[1:3]
    paths = tables.manifest["path"]
    rows = []
    for start in range(0, units, STRIP_GROUP):
        count = min(STRIP_GROUP, units - start)
        sheets = {curve: f"{PAGES_DIR}/{label}/{start // STRIP_GROUP:03d}-{curve}.webp"
                  for curve in CURVES}
        live = image_ids[:, start:start + count] >= 0
        for curve, path in sheets.items():
            cells = _display_cells(projections[:, start:start + count], curve)
            writer.save(_sheet(cells, live, cell_hw), out_dir / path)
        width, height = _sheet_size(count, n_snapshots, cell_hw)
        for j in range(count):
            unit = start + j
            row_cells, files = [], []
            for s, snapshot in enumerate(snapshots):
                image_id = int(image_ids[s, unit])
                x, y = _cell_xy(j, s, cell_hw)
                crop: ProjectionCell | None = None
                if image_id >= 0:
                    linear, lifted = (SheetCell(sheets[curve], x, y, cell_hw[1], cell_hw[0],
                                                width, height) for curve in CURVES)
                    crop = ProjectionCell(linear, lifted, 1.0)
                row_cells.append(SnapshotCell(snapshot, float(values[s, unit]), crop))
                files.append(str(paths.iat[image_id]) if image_id >= 0 else None)
            rows.append(StripRow(unit, unit_path(label, unit), tuple(row_cells), tuple(files)))
    return LayerStrips(label, tuple(rows), cell_hw, layer_meta.receptive_field[0],
                       tile_scale(cell_hw[0]))


def _display_cells(projections, curve: str) -> np.ndarray:
    """``[S, n, h, w, C]`` stored projections as display pixels ``[S, n, H, W, 3]`` through
    the display ``curve``, binned like the tiles (silent cells are never drawn)."""
    stored = np.asarray(projections, np.float32)
    s, n = stored.shape[:2]
    shown = shown_projections(stored.reshape(s * n, *stored.shape[2:]), curve)
    return shown.reshape(s, n, *shown.shape[1:])


def _cell_xy(row: int, column: int, cell_hw: tuple[int, int]) -> tuple[int, int]:
    return column * (cell_hw[1] + GUTTER), row * (cell_hw[0] + GUTTER)


def _sheet_size(rows: int, columns: int, cell_hw: tuple[int, int]) -> tuple[int, int]:
    return columns * (cell_hw[1] + GUTTER) - GUTTER, rows * (cell_hw[0] + GUTTER) - GUTTER


def _sheet(cells: np.ndarray, live: np.ndarray, cell_hw: tuple[int, int]) -> Image.Image:
    """A row per unit, a column per snapshot; silent cells are background."""
    n_snapshots, rows = cells.shape[:2]
    width, height = _sheet_size(rows, n_snapshots, cell_hw)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for s in range(n_snapshots):
        for j in range(rows):
            if live[s, j]:
                x, y = _cell_xy(j, s, cell_hw)
                canvas[y:y + cell_hw[0], x:x + cell_hw[1]] = cells[s, j]
    return Image.fromarray(canvas, "RGB")


def _write_preview(store, labels: list[str], out_dir: Path, writer: ImageWriter) -> str | None:
    """The index card's picture: for every layer the unit strongest at the last snapshot,
    across all snapshots; layers' strips side by side in as many rows as keep it card-shaped."""
    strips = []
    for label in labels:
        group = store[label]
        last = group["value"][-1]
        if not (group["image_id"][-1] >= 0).any():
            continue
        unit = int(np.argmax(last))
        stored = np.asarray(group["projections"][:, unit], np.float32)
        live = group["image_id"][:, unit] >= 0
        # binned by a whole factor to at most PREVIEW_CELL px (linear, each on its own scale)
        factor = bin_factor(max(stored.shape[1:3]), PREVIEW_CELL)
        shown = shown_rgb(np.stack([curve_display(cell, "linear")
                                    for cell in binned(stored, factor)]), fourth_beside=False)
        up = max(1, PREVIEW_CELL // max(shown.shape[1:3]))  # small fields: a whole factor up
        shown = shown.repeat(up, axis=1).repeat(up, axis=2)
        box = np.full((len(shown), PREVIEW_CELL, PREVIEW_CELL, 3), BACKGROUND, np.uint8)
        y, x = ((PREVIEW_CELL - n) // 2 for n in shown.shape[1:3])
        box[:, y:y + shown.shape[1], x:x + shown.shape[2]] = shown
        cells = [cell if alive else np.full(cell.shape, BACKGROUND, np.uint8)
                 for cell, alive in zip(box, live, strict=True)]
        strips.append(cells)
    if not strips:
        return None
    side_h = side_w = PREVIEW_CELL
    n_snapshots = len(strips[0])
    per_row = min(range(1, len(strips) + 1), key=lambda k: abs(
        k * n_snapshots / math.ceil(len(strips) / k) - PREVIEW_ASPECT))
    rows = math.ceil(len(strips) / per_row)
    gap = 3 * GUTTER  # between layers' strips, wider than between snapshots
    strip_w = n_snapshots * (side_w + GUTTER) - GUTTER
    width = per_row * (strip_w + gap) - gap
    height = rows * (side_h + gap) - gap
    # transparent between the strips: the card shows through, also where a row is short
    canvas = np.zeros((height, width, 4), np.uint8)
    for i, cells in enumerate(strips):
        top = (i // per_row) * (side_h + gap)
        left = (i % per_row) * (strip_w + gap)
        for s, cell in enumerate(cells):
            x = left + s * (side_w + GUTTER)
            canvas[top:top + side_h, x:x + side_w, :3] = cell
            canvas[top:top + side_h, x:x + side_w, 3] = 255
    path = f"{PAGES_DIR}/preview.png"
    writer.save(Image.fromarray(canvas, "RGBA"), out_dir / path)
    return path
