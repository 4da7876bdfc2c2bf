"""Pixel work of the atlas: Figure 2 unit tiles, the Figure 6 filter grid, PNG output.

Only numpy and PIL, so the images can be built (and tested) without torch. The composing
functions take display pixels, RGB ``[..., 3]``; pictures in the network's own channels become
those in :func:`pipeline.atlas.channels.shown_rgb` (here for filters and thumbnails).

Geometry of a unit tile (cells of ``h x w`` pixels, integer ``scale`` s, ``GUTTER`` g = 2,
``GAP`` G = 10)::

    width  = 6*w*s + 4*g + G      (two 3x3 grids side by side)
    height = 3*h*s + 2*g

Geometry of a filter grid (C filters of ``kh x kw``, cols = ceil(sqrt(C)),
rows = ceil(C / cols))::

    width  = cols*kw*s + (cols - 1)*g
    height = rows*kh*s + (rows - 1)*g
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.atlas.channels import shown_rgb
from pipeline.atomic import writing

GUTTER = 2  # px between cells, not scaled, so cells stay visibly separate at any scale
GAP = 10  # px between the projection grid and the patch grid
BACKGROUND = (40, 40, 40)  # gutters and empty cells: dark, neutral, distinct from mid-grey
GRID = 3  # Figure 2 shows the top 9 as 3x3


def tile_scale(h: int, target: int = 48) -> int:
    """Integer nearest-neighbour scale that brings an ``h``-pixel cell close to ``target``.

    conv1 receptive fields are ~7 px, invisible at 1:1; deep layers are already large and
    stay at 1. An integer factor keeps every source pixel a sharp square.
    """
    if h <= 0 or target <= 0:
        raise ValueError(f"tile_scale needs positive sizes, got h={h}, target={target}")
    return max(1, round(target / h))


def grid_side(k: int) -> int:
    """Cells per side of a unit's grid: 3 for the paper's top 9, ceil(sqrt(k)) in general."""
    return max(1, math.ceil(math.sqrt(k)))


def _check_stack(name: str, images: np.ndarray, grid: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 numpy array")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [n, h, w, 3], got {images.shape}")
    if images.shape[0] > grid * grid:
        raise ValueError(f"{name} holds {images.shape[0]} images; a {grid}x{grid} tile shows "
                         f"at most {grid * grid}")


def _upscale(images: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of the two spatial axes of ``[..., h, w, c]``."""
    if scale == 1:
        return images
    return images.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _grid_into(canvas: np.ndarray, cells: np.ndarray, x0: int, cols: int) -> None:
    """Paste ``cells`` row-major into ``canvas``, starting at column ``x0``."""
    ch, cw = cells.shape[1:3]
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        y, x = r * (ch + GUTTER), x0 + c * (cw + GUTTER)
        canvas[y : y + ch, x : x + cw] = cell


def tile_cells(n: int, cell_hw: tuple[int, int], scale: int = 1, grid: int = GRID
               ) -> tuple[tuple[int, int], list[tuple[int, int, int, int]],
                          list[tuple[int, int, int, int]]]:
    """Geometry of a unit tile: its (width, height) and the (x, y, w, h) of each of the ``n``
    projection cells and patch cells, so a page can show one cell of the tile image alone."""
    h, w = cell_hw[0] * scale, cell_hw[1] * scale
    grid_w = grid * w + (grid - 1) * GUTTER
    size = (2 * grid_w + GAP, grid * h + (grid - 1) * GUTTER)
    cells = [(c * (w + GUTTER), r * (h + GUTTER), w, h) for r, c in
             (divmod(i, grid) for i in range(n))]
    patches = [(x + grid_w + GAP, y, cw, ch) for x, y, cw, ch in cells]
    return size, cells, patches


def projection_grid_width(tile_width: int) -> int:
    """Width of a tile's left grid alone (the projections, or layer 1's filter)."""
    return (tile_width - GAP) // 2


def compose_unit_tile(projections: np.ndarray, patches: np.ndarray, scale: int = 1,
                      grid: int = GRID) -> Image.Image:
    """One Figure 2 tile: a grid of projections on the left, their patches on the right.

    Inputs are uint8 ``[n, h, w, 3]`` with the same shape and ``n <= grid**2``; image ``i`` of
    each stack goes to the same cell, so a projection sits at the same place as its patch.
    Fewer images leave the remaining cells as background. See the module doc for the size.
    """
    _check_stack("projections", projections, grid)
    _check_stack("patches", patches, grid)
    if projections.shape != patches.shape:
        raise ValueError(f"projections {projections.shape} and patches {patches.shape} must match")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    (width, height), _, _ = tile_cells(0, projections.shape[1:3], scale, grid)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    _grid_into(canvas, _upscale(projections, scale), 0, grid)
    _grid_into(canvas, _upscale(patches, scale), projection_grid_width(width) + GAP, grid)
    return Image.fromarray(canvas, "RGB")


def compose_grid(cells: np.ndarray, scale: int = 1, grid: int = GRID) -> Image.Image:
    """Only the left half of a unit tile: a grid of cells (another method's projections, shown
    on unit pages with the tile's patches). Cell ``i`` sits where it sits in the tile."""
    _check_stack("cells", cells, grid)
    (width, height), _, _ = tile_cells(0, cells.shape[1:3], scale, grid)
    canvas = np.empty((height, projection_grid_width(width), 3), np.uint8)
    canvas[:] = BACKGROUND
    _grid_into(canvas, _upscale(cells, scale), 0, grid)
    return Image.fromarray(canvas, "RGB")


def normalise_filters(weights: np.ndarray) -> np.ndarray:
    """Map filters ``[C, K, kh, kw]`` (K = 1, 3 or 4 input channels) to uint8
    ``[C, kh, kw, K]``: zero -> 128, +max|w| -> 255, -max|w| -> 0.

    Per-filter and symmetric, as in the paper's Figure 6: a filter's sign pattern stays
    readable (grey is "no weight") whatever its norm; an all-zero filter is flat grey. One
    scale for all of a filter's input channels, so their weights compare.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] not in (1, 3, 4):
        raise ValueError(f"weights must have shape [C, K, kh, kw] with K = 1, 3 or 4 input "
                         f"channels, got {w.shape}")
    peak = np.abs(w).max(axis=(1, 2, 3), keepdims=True)
    unit = np.divide(w, peak, out=np.zeros_like(w), where=peak > 0)
    scaled = np.clip(np.rint(127.5 + 127.5 * unit), 0, 255).astype(np.uint8)
    return scaled.transpose(0, 2, 3, 1)


def filter_grid(weights: np.ndarray, scale: int) -> Image.Image:
    """First-layer filters ``[C, K, kh, kw]`` as a near-square grid (the paper's Figure 6),
    each drawn as its K input channels are (``shown_rgb``: grey for one)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    cells = _upscale(shown_rgb(normalise_filters(weights)), scale)
    n, ch, cw = cells.shape[:3]
    if n == 0:
        raise ValueError("filter_grid needs at least one filter")
    (width, height), places = filter_grid_cells(n, (ch, cw))
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for cell, (x, y, w, h) in zip(cells, places, strict=True):
        canvas[y:y + h, x:x + w] = cell
    return Image.fromarray(canvas, "RGB")


def filter_grid_cells(n: int, cell_hw: tuple[int, int]
                      ) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
    """Geometry of :func:`filter_grid`: its (width, height) and each filter's (x, y, w, h), so
    a page can link every filter of the grid to its unit."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    ch, cw = cell_hw
    size = (cols * cw + (cols - 1) * GUTTER, rows * ch + (rows - 1) * GUTTER)
    cells = [(c * (cw + GUTTER), r * (ch + GUTTER), cw, ch)
             for r, c in (divmod(i, cols) for i in range(n))]
    return size, cells


def bin_factor(side: int, max_side: int) -> int:
    """The smallest whole factor that bins ``side`` pixels to at most ``max_side`` (1: kept)."""
    if side <= 0 or max_side <= 0:
        raise ValueError(f"bin_factor needs positive sizes, got side={side}, max={max_side}")
    return max(1, math.ceil(side / max_side))


def binned(cells: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor x factor`` block of ``[n, h, w, C]`` cells, as float64 (a block
    cut by the edge averages the pixels it has): a whole-factor reduction, so every shown pixel
    stands for the same square of source pixels and nothing is resampled between them."""
    cells = np.asarray(cells, dtype=np.float64)
    if factor == 1:
        return cells
    n, h, w, c = cells.shape
    bh, bw = math.ceil(h / factor), math.ceil(w / factor)
    # one strided slice per offset in the block, added in place: a quarter of the time of
    # summing a 6-d reshaped view over two axes, which numpy walks element by element
    sums = np.zeros((n, bh, bw, c))
    counts = np.zeros((bh, bw))
    for dy in range(factor):
        rows = cells[:, dy::factor]
        for dx in range(factor):
            block = rows[:, :, dx::factor]
            sums[:, :block.shape[1], :block.shape[2]] += block
            counts[:block.shape[1], :block.shape[2]] += 1
    return sums / counts[None, :, :, None]


def fit_cells(cells: np.ndarray, max_side: int) -> np.ndarray:
    """Bin uint8 ``[n, h, w, C]`` cells by the smallest whole factor that brings the longer
    side to at most ``max_side`` (:func:`binned`, rounded): deep layers' 160-px fields would
    otherwise dominate the atlas's size, and a whole factor keeps the pixel grid of the
    projections beside them."""
    n, h, w = cells.shape[:3]
    if max(h, w) <= max_side or n == 0:
        return cells
    factor = bin_factor(max(h, w), max_side)
    return np.clip(np.rint(binned(cells, factor)), 0, 255).astype(np.uint8)


def sheet_cell(row: int, column: int, side: int) -> tuple[int, int]:
    """(x, y) of a cell of a thumbnail or map sheet: ``side`` px cells, ``GUTTER`` px apart, so
    a browser scaling one cell never blends in its neighbours' pixels."""
    return column * (side + GUTTER), row * (side + GUTTER)


def sheet_size(rows: int, columns: int, side: int) -> tuple[int, int]:
    """(width, height) of a sheet of ``rows`` x ``columns`` cells (see :func:`sheet_cell`)."""
    return columns * (side + GUTTER) - GUTTER, rows * (side + GUTTER) - GUTTER


def thumb_sheet(thumbs: np.ndarray, side: int | None = None) -> Image.Image:
    """Thumbnails ``[units, k, t, t, C]`` as one image: a row per unit, a column per rank,
    each cell resized to ``side`` pixels (default: as stored), with gutters between cells.
    A thumbnail only places the receptive field's box, so of 4 channels it shows channels 1-3
    (``shown_rgb(..., fourth_beside=False)``)."""
    thumbs = shown_rgb(np.asarray(thumbs), fourth_beside=False)
    units, k, t = thumbs.shape[:3]
    side = side or t
    sheet = Image.new("RGB", sheet_size(units, k, side), BACKGROUND)
    for unit in range(units):
        for rank in range(k):
            cell = Image.fromarray(thumbs[unit, rank], "RGB")
            if side != t:
                cell = cell.resize((side, side), Image.Resampling.BOX)
            sheet.paste(cell, sheet_cell(unit, rank, side))
    return sheet


# A heat ramp for activation maps: transparent at zero, then dark red, orange, yellow; at most
# about half opaque, so the image stays visible where the unit fires most.
_HEAT = np.array([[0, 0, 0, 0], [150, 20, 20, 70], [235, 90, 20, 105], [255, 190, 30, 125],
                  [255, 240, 120, 140]], dtype=np.float32)
MAP_SIDE = 64  # px: larger maps are max-pooled for the atlas (VGG's first maps are 224 px)
HEAT_LEVELS = 32  # shades of the overlay: finer steps are invisible under the image


def heat_rgba(values: np.ndarray) -> np.ndarray:
    """uint8 RGBA ``[..., 4]`` for values in [0, 1] (clipped): the map overlay's colours."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    position = v * (len(_HEAT) - 1)
    low = np.minimum(position.astype(int), len(_HEAT) - 2)
    fraction = (position - low)[..., None]
    rgba = _HEAT[low] * (1 - fraction) + _HEAT[low + 1] * fraction
    return np.rint(rgba).astype(np.uint8)


def pooled_maps(maps: np.ndarray, max_side: int = MAP_SIDE) -> np.ndarray:
    """``[..., h, w]`` maps max-pooled by the smallest integer factor that brings them to at
    most ``max_side`` (partial blocks at the end included), so a peak is never averaged away;
    the pooled map still covers the same area of the image."""
    h, w = maps.shape[-2:]
    factor = math.ceil(max(h, w) / max_side)
    if factor <= 1:
        return maps
    ph, pw = math.ceil(h / factor) * factor, math.ceil(w / factor) * factor
    padded = np.full((*maps.shape[:-2], ph, pw), -np.inf, dtype=np.float32)
    padded[..., :h, :w] = maps
    blocks = padded.reshape(*maps.shape[:-2], ph // factor, factor, pw // factor, factor)
    return blocks.max(axis=(-3, -1))


def map_sheet(maps: np.ndarray) -> Image.Image:
    """Activation maps ``[units, k, h, w]`` as one palette image with transparency (at their
    own resolution, or pooled to ``MAP_SIDE``), a row per unit and a column per rank (see
    :func:`sheet_cell`), each map scaled by its own maximum (the unit's value in that image)."""
    maps = pooled_maps(np.asarray(maps, dtype=np.float32))
    units, k, h, w = maps.shape
    side = max(h, w)
    peak = np.maximum(maps.max(axis=(2, 3), keepdims=True), 0.0)
    scaled = np.divide(maps, peak, out=np.zeros(maps.shape, np.float32), where=peak > 0)
    # A palette of HEAT_LEVELS colours (index 0: transparent): a quarter of the bytes of RGBA.
    levels = np.rint(scaled * (HEAT_LEVELS - 1)).astype(np.uint8)
    canvas = np.zeros(sheet_size(units, k, side)[::-1], np.uint8)
    for unit in range(units):
        for rank in range(k):
            x, y = sheet_cell(unit, rank, side)
            canvas[y:y + h, x:x + w] = levels[unit, rank]
    palette = heat_rgba(np.linspace(0.0, 1.0, HEAT_LEVELS))
    sheet = Image.fromarray(canvas, "P")
    sheet.putpalette(palette[:, :3].reshape(-1).tolist())
    sheet.info["transparency"] = bytes(palette[:, 3].tolist())
    return sheet


#: Projections are stored losslessly: lossless WebP at this effort (measured on AlexNet-sized
#: grids: 6 % smaller than PNG at the same encoding time; effort 100 gains 1 % at 500 times it).
WEBP_EFFORT, WEBP_METHOD = 50, 2


def save_image(image: Image.Image, path: Path, quality: int = 85,
               full_colour: bool = True) -> None:
    """Write ``image`` as lossless WebP, PNG or JPEG (by ``path``'s suffix, JPEG in full colour
    unless ``full_colour`` is false), creating parent folders.

    Written through :func:`pipeline.atomic.writing`, so an interrupted run never leaves a
    truncated image that a later resume would take as done. PNG at zlib level 6: measured
    within 1-4 % of ``optimize=True`` on tiles, at 1/8 of its time, which adds up over
    thousands of units. WebP is always lossless here: it holds projections, whose every value
    is the engine's.
    """
    path = Path(path)
    with writing(path) as f:
        suffix = path.suffix.lower()
        if suffix in (".jpg", ".jpeg"):
            # 4:4:4: JPEG's default 4:2:0 halves the colour resolution, and a projection's
            # colour lives in exactly the fine detail that would be thrown away. Photos
            # that only place a box (thumbnails) can keep 4:2:0 (``full_colour=False``).
            image.save(f, format="JPEG", quality=quality, subsampling=0 if full_colour else 2)
        elif suffix == ".webp":
            image.save(f, format="WEBP", lossless=True, quality=WEBP_EFFORT, method=WEBP_METHOD)
        else:
            image.save(f, format="PNG", compress_level=6)
