"""Geometry and pixel values of the atlas images (pipeline.atlas.tiles)."""

import numpy as np
import pytest
from PIL import Image

from pipeline.atlas.tiles import (
    BACKGROUND,
    GAP,
    GUTTER,
    compose_unit_tile,
    filter_grid,
    save_image,
    tile_scale,
)


def _stack(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _cell(tile: np.ndarray, grid: int, i: int, h: int, w: int) -> np.ndarray:
    """Cell ``i`` (row-major) of grid 0 (projections) or 1 (patches), per the documented formula."""
    r, c = divmod(i, 3)
    x0 = grid * (3 * w + 2 * GUTTER + GAP)
    y, x = r * (h + GUTTER), x0 + c * (w + GUTTER)
    return tile[y : y + h, x : x + w]


@pytest.mark.parametrize("n", [9, 3])
@pytest.mark.parametrize(("h", "w", "scale"), [(7, 7, 3), (5, 8, 1), (4, 6, 2)])
def test_tile_size_is_documented_formula(n: int, h: int, w: int, scale: int) -> None:
    image = compose_unit_tile(_stack(n, h, w), _stack(n, h, w, 1), scale)
    assert image.mode == "RGB"
    assert image.size == (6 * w * scale + 4 * GUTTER + GAP, 3 * h * scale + 2 * GUTTER)


def test_tile_size_concrete_numbers() -> None:
    # conv1 of a 7x7 receptive field at tile_scale(7) == 7: 49 px cells.
    image = compose_unit_tile(_stack(9, 7, 7), _stack(9, 7, 7), tile_scale(7))
    assert image.size == (312, 151)


def test_tile_cells_hold_upscaled_images_in_order() -> None:
    h, w, s = 4, 5, 3
    proj, patch = _stack(9, h, w, 1), _stack(9, h, w, 2)
    tile = np.asarray(compose_unit_tile(proj, patch, s))
    for i in range(9):
        expected_p = proj[i].repeat(s, axis=0).repeat(s, axis=1)
        expected_q = patch[i].repeat(s, axis=0).repeat(s, axis=1)
        np.testing.assert_array_equal(_cell(tile, 0, i, h * s, w * s), expected_p)
        np.testing.assert_array_equal(_cell(tile, 1, i, h * s, w * s), expected_q)


def test_fewer_images_leave_background_cells() -> None:
    h, w = 6, 6
    tile = np.asarray(compose_unit_tile(_stack(3, h, w, 1), _stack(3, h, w, 2), 2))
    for grid in (0, 1):
        for i in range(3):
            assert not (_cell(tile, grid, i, 12, 12) == BACKGROUND).all()
        for i in range(3, 9):
            assert (_cell(tile, grid, i, 12, 12) == BACKGROUND).all()


def test_gutters_and_gap_are_background() -> None:
    h = w = 5
    tile = np.asarray(compose_unit_tile(_stack(9, h, w), _stack(9, h, w), 1))
    grid_w = 3 * w + 2 * GUTTER
    assert (tile[:, grid_w : grid_w + GAP] == BACKGROUND).all()
    assert (tile[h : h + GUTTER, :] == BACKGROUND).all()
    assert (tile[:, w : w + GUTTER] == BACKGROUND).all()


def test_empty_tile_is_all_background() -> None:
    empty = np.zeros((0, 5, 5, 3), np.uint8)
    assert (np.asarray(compose_unit_tile(empty, empty, 2)) == BACKGROUND).all()


@pytest.mark.parametrize(
    ("projections", "patches", "error"),
    [
        (_stack(10, 4, 4), _stack(10, 4, 4), ValueError),
        (_stack(9, 4, 4), _stack(9, 5, 4), ValueError),
        (_stack(9, 4, 4), _stack(8, 4, 4), ValueError),
        (_stack(9, 4, 4).astype(np.float32), _stack(9, 4, 4), TypeError),
        (np.zeros((9, 4, 4), np.uint8), np.zeros((9, 4, 4), np.uint8), ValueError),
    ],
)
def test_tile_rejects_bad_input(projections, patches, error) -> None:
    with pytest.raises(error):
        compose_unit_tile(projections, patches)


def test_tile_rejects_bad_scale() -> None:
    with pytest.raises(ValueError):
        compose_unit_tile(_stack(1, 4, 4), _stack(1, 4, 4), 0)


@pytest.mark.parametrize(("h", "scale"), [(7, 7), (11, 4), (24, 2), (48, 1), (163, 1), (224, 1)])
def test_tile_scale(h: int, scale: int) -> None:
    assert tile_scale(h) == scale


def test_tile_scale_target_and_errors() -> None:
    assert tile_scale(7, target=14) == 2
    with pytest.raises(ValueError):
        tile_scale(0)


def test_filter_grid_normalises_each_filter_symmetrically() -> None:
    weights = np.zeros((4, 3, 2, 2))
    weights[1, 0, 0, 0] = 2.0  # +max -> 255
    weights[1, 1, 0, 0] = -1.0  # half of -max -> 64
    weights[2, 2, 1, 1] = -1e-3  # tiny filter: still reaches full contrast
    weights[3] = 1e6  # huge constant filter: all white
    grid = np.asarray(filter_grid(weights, 1))
    # 4 filters -> 2x2 grid; cell i at (r, c) = divmod(i, 2), 2x2 px, 2 px gutters.
    cells = [
        grid[r * 4 : r * 4 + 2, c * 4 : c * 4 + 2] for r, c in [(0, 0), (0, 1), (1, 0), (1, 1)]
    ]
    assert (cells[0] == 128).all()  # all-zero filter -> mid grey
    assert cells[1][0, 0].tolist() == [255, 64, 128]
    assert (cells[1][1:, :] == 128).all()
    assert cells[2][1, 1].tolist() == [128, 128, 0]  # -max|w| -> 0
    assert (cells[3] == 255).all()


def test_filter_grid_is_scale_invariant_per_filter() -> None:
    weights = np.random.default_rng(0).normal(size=(2, 3, 5, 5))
    a = np.asarray(filter_grid(weights, 1))
    weights[1] *= 1000.0
    b = np.asarray(filter_grid(weights, 1))
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0 or a.max() == 255


@pytest.mark.parametrize(("c", "cols", "rows"), [(96, 10, 10), (64, 8, 8), (5, 3, 2), (1, 1, 1)])
def test_filter_grid_size_is_near_square(c: int, cols: int, rows: int) -> None:
    k, s = 7, 3
    image = filter_grid(np.ones((c, 3, k, k)), s)
    assert image.size == (cols * k * s + (cols - 1) * GUTTER, rows * k * s + (rows - 1) * GUTTER)


def test_filter_grid_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        filter_grid(np.ones((4, 2, 3, 3)), 1)
    with pytest.raises(ValueError):
        filter_grid(np.ones((0, 3, 3, 3)), 1)


def test_save_image_writes_png_and_parents(tmp_path) -> None:
    image = compose_unit_tile(_stack(9, 3, 3), _stack(9, 3, 3), 2)
    path = tmp_path / "a" / "b" / "tile.png"
    save_image(image, path)
    with Image.open(path) as back:
        assert back.format == "PNG"
        assert back.size == image.size
        np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(image))
    assert [p.name for p in path.parent.iterdir()] == ["tile.png"]  # no temporary left over
    save_image(image, path)  # overwriting is fine
    assert path.is_file()


def test_method_grid_is_the_left_half_of_a_tile() -> None:
    from pipeline.atlas.tiles import compose_grid

    proj, patch = _stack(9, 5, 5, 1), _stack(9, 5, 5, 2)
    tile = np.asarray(compose_unit_tile(proj, patch, 2))
    grid = np.asarray(compose_grid(proj, 2))
    np.testing.assert_array_equal(grid, tile[:, :grid.shape[1]])
    assert grid.shape[1] == (tile.shape[1] - GAP) // 2


def test_filter_grid_cells_locate_every_filter() -> None:
    from pipeline.atlas.tiles import filter_grid_cells, normalise_filters

    weights = np.random.default_rng(1).normal(size=(10, 3, 3, 3))
    image = np.asarray(filter_grid(weights, 4))
    size, cells = filter_grid_cells(10, (12, 12))
    assert size == image.shape[1::-1]
    expected = normalise_filters(weights).repeat(4, axis=1).repeat(4, axis=2)
    for i, (x, y, w, h) in enumerate(cells):
        np.testing.assert_array_equal(image[y:y + h, x:x + w], expected[i])


def test_thumbnail_sheet_cells_are_separated_by_gutters() -> None:
    from pipeline.atlas.tiles import sheet_cell, sheet_size, thumb_sheet

    thumbs = _stack(6, 8, 8, 3).reshape(2, 3, 8, 8, 3)
    sheet = np.asarray(thumb_sheet(thumbs))
    assert sheet.shape[1::-1] == sheet_size(2, 3, 8) == (3 * 8 + 2 * GUTTER, 2 * 8 + GUTTER)
    for unit in range(2):
        for rank in range(3):
            x, y = sheet_cell(unit, rank, 8)
            np.testing.assert_array_equal(sheet[y:y + 8, x:x + 8], thumbs[unit, rank])
    # nothing of a neighbour touches a cell: a browser scaling one cell cannot blend them in
    assert (sheet[8:8 + GUTTER] == BACKGROUND).all()
    assert (sheet[:, 8:8 + GUTTER] == BACKGROUND).all()


def test_map_sheet_scales_each_map_by_its_own_maximum() -> None:
    from pipeline.atlas.tiles import heat_rgba, map_sheet, sheet_cell

    maps = np.zeros((2, 2, 3, 4))
    maps[0, 0, 1, 2] = 5.0
    maps[0, 0, 0, 0] = 2.5
    maps[1, 1] = 0.001  # a weak map still reaches full colour at its maximum
    sheet = np.asarray(map_sheet(maps).convert("RGBA"))
    assert sheet.shape[2] == 4  # zero is transparent
    x, y = sheet_cell(0, 0, 4)
    cell = sheet[y:y + 3, x:x + 4]
    assert cell[1, 2].tolist() == heat_rgba(np.array(1.0)).tolist()
    # 32 shades: 0.5 is shown as the nearest, 16/31
    assert cell[0, 0].tolist() == heat_rgba(np.array(16 / 31, np.float32)).tolist()
    assert cell[2, 3, 3] == 0  # zero: fully transparent
    x, y = sheet_cell(1, 1, 4)
    assert (sheet[y:y + 3, x:x + 4] == heat_rgba(np.array(1.0))).all()
    alpha = heat_rgba(np.linspace(0, 1, 11))[:, 3]
    assert alpha[0] == 0 and (np.diff(alpha.astype(int)) > 0).all()


def test_jpeg_keeps_full_colour_resolution(tmp_path) -> None:
    # one-pixel colour detail, as in a projection: 4:2:0 would average it away
    rng = np.random.default_rng(0)
    pixels = np.full((48, 48, 3), 128, np.uint8)
    pixels[..., 0] = np.where(rng.random((48, 48)) < 0.5, 80, 176)
    pixels[..., 2] = 256 - pixels[..., 0].astype(int)
    save_image(Image.fromarray(pixels), tmp_path / "p.jpg", quality=75)
    with Image.open(tmp_path / "p.jpg") as back:
        shown = np.asarray(back.convert("RGB")).astype(int)
    saturation = (shown.max(axis=2) - shown.min(axis=2)).mean()
    assert saturation > 60  # stored: 96; with 4:2:0 chroma it drops below 40


def test_large_activation_maps_are_max_pooled_keeping_their_peaks() -> None:
    from pipeline.atlas.tiles import MAP_SIDE, pooled_maps

    maps = np.zeros((1, 1, 224, 224), np.float32)
    maps[0, 0, 223, 223] = 7.0  # in the last, partial block
    maps[0, 0, 10, 100] = 3.0
    pooled = pooled_maps(maps)
    assert pooled.shape == (1, 1, 56, 56) and max(pooled.shape[2:]) <= MAP_SIDE
    assert pooled[0, 0, 55, 55] == 7.0 and pooled[0, 0, 2, 25] == 3.0
    assert pooled_maps(maps[..., :13, :13]).shape == (1, 1, 13, 13)  # small maps stay as they are
