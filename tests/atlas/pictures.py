"""A unit's pictures as the render stage writes them, for atlas tests that build their own
context: a patch grid (JPEG) and a projection grid per display curve (lossless WebP), with the
crops a UnitEntry links."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.atlas.channels import shown_rgb
from pipeline.atlas.context import ProjectionCell, SheetCell
from pipeline.atlas.tiles import compose_grid, projection_grid_width, save_image, tile_cells
from pipeline.interp.display import CURVES, curve_display, display_scale


def unit_pictures(out: Path, rel: str, n: int, size: int, seed: int = 0,
                  scale: float = 1.0) -> dict:
    """Write the pictures of a unit with ``n`` top images of ``size`` px under ``out``
    (``rel`` + "-patches.jpg", + "-deconvnet-<curve>.webp"); UnitEntry's tile, grid and
    patches for them. ``scale`` multiplies the projections (a weaker unit: smaller)."""
    rng = np.random.default_rng(seed)
    patches = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    projections = rng.normal(0, 1, (n, size, size, 3)).astype(np.float32) * scale
    (width, height), cells, _ = tile_cells(9, (size, size), 1, 3)
    sheet = (projection_grid_width(width), height)
    tile = f"{rel}-patches.jpg"
    save_image(compose_grid(patches, 1, 3), out / tile, quality=95)
    crops = {}
    for curve in CURVES:
        path = f"{rel}-deconvnet-{curve}.webp"
        shown = shown_rgb(np.stack([curve_display(p, curve) for p in projections]))
        save_image(compose_grid(shown, 1, 3), out / path)
        crops[curve] = [SheetCell(path, *cells[r], *sheet) for r in range(n)]
    grid = tuple(ProjectionCell(crops["linear"][r], crops["lifted"][r],
                                display_scale(projections[r])) for r in range(n))
    return {"tile": tile, "grid": grid,
            "patches": tuple(SheetCell(tile, *cells[r], *sheet) for r in range(n))}
