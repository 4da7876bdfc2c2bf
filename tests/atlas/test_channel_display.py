"""The atlas draws pictures in the model's input channels: grey for one, RGB as it is, and
channels 1-3 in colour with the fourth in grey beside them for four."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.atlas.channels import (
    FOURTH_GAP,
    GAP_COLOUR,
    channels_note,
    shown_rgb,
    shown_width,
)
from pipeline.atlas.gather import shown_cells, shown_projections
from pipeline.atlas.tiles import (
    BACKGROUND,
    filter_grid,
    filter_grid_cells,
    fit_cells,
    normalise_filters,
    sheet_size,
    thumb_sheet,
)
from pipeline.interp.display import GREY, to_display

RNG = np.random.default_rng(3)


def _pictures(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def test_one_channel_is_drawn_grey():
    grey = _pictures(2, 5, 7, 1)
    shown = shown_rgb(grey)
    assert shown.shape == (2, 5, 7, 3)
    assert all(np.array_equal(shown[..., c], grey[..., 0]) for c in range(3))


def test_three_channels_are_drawn_as_they_are():
    rgb = _pictures(5, 7, 3)
    assert shown_rgb(rgb) is rgb
    assert shown_width(7, 3) == 7 and shown_width(7, 1) == 7


def test_the_fourth_channel_is_drawn_in_grey_beside_the_first_three():
    rgba = _pictures(2, 5, 7, 4)
    shown = shown_rgb(rgba)
    assert shown.shape == (2, 5, 2 * 7 + FOURTH_GAP, 3) and shown_width(7, 4) == 2 * 7 + FOURTH_GAP
    assert np.array_equal(shown[..., :7, :], rgba[..., :3])
    assert (shown[..., 7:7 + FOURTH_GAP, :] == GAP_COLOUR).all()
    assert all(np.array_equal(shown[..., 7 + FOURTH_GAP:, c], rgba[..., 3]) for c in range(3))
    assert GAP_COLOUR == BACKGROUND  # the dark of the tiles' gutters: no value of a picture
    alone = shown_rgb(rgba, fourth_beside=False)
    assert np.array_equal(alone, rgba[..., :3])


def test_other_channel_counts_are_not_drawn():
    with pytest.raises(ValueError, match="1, 3 or 4"):
        shown_rgb(_pictures(5, 7, 2))


def test_the_note_says_how_channels_are_drawn():
    assert channels_note(3) == ""
    assert "grey" in channels_note(1)
    assert "channel 4" in channels_note(4) and "channels 1-3 only" in channels_note(4)


def test_a_grey_projection_keeps_zero_at_mid_grey_and_its_sign():
    projection = np.zeros((6, 6, 1), np.float32)
    projection[1, 1], projection[4, 4] = 2.0, -2.0
    cells = shown_projections(projection[None])
    assert cells.shape == (1, 6, 6, 3)
    assert (cells[..., 0] == cells[..., 1]).all() and (cells[..., 1] == cells[..., 2]).all()
    assert cells[0, 0, 0, 0] == GREY and cells[0, 1, 1, 0] > GREY > cells[0, 4, 4, 0]
    assert np.array_equal(cells[0, ..., 0], to_display(projection)[..., 0])


def test_cells_are_shrunk_a_channel_at_a_time():
    """RGBA through Pillow would be premultiplied by alpha: colour under alpha 0 would go black."""
    rgba = _pictures(1, 80, 80, 4)
    rgba[..., 3] = 0
    fitted = fit_cells(rgba, 40)
    assert fitted.shape == (1, 40, 40, 4) and (fitted[..., 3] == 0).all()
    for c in range(3):
        # whole-factor binning: each shown pixel the mean of a 2 x 2 block, channel by channel
        band = np.rint(rgba[0, ..., c].reshape(40, 2, 40, 2).mean(axis=(1, 3)))
        assert np.array_equal(fitted[0, ..., c], band)
    grey = _pictures(3, 80, 64, 1)
    assert shown_cells(grey).shape == (3, 40, 32, 3)  # binned by 2 (whole factor), as for RGB


def test_grey_filters_are_drawn_as_grey_filters():
    weights = RNG.normal(size=(5, 1, 3, 3))
    normalised = normalise_filters(weights)
    assert normalised.shape == (5, 3, 3, 1)
    grid = np.asarray(filter_grid(weights, 2))
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()
    _, cells = filter_grid_cells(5, (6, 6))
    for i, (x, y, w, h) in enumerate(cells):
        expected = normalised[i, ..., 0].repeat(2, axis=0).repeat(2, axis=1)
        assert np.array_equal(grid[y:y + h, x:x + w, 0], expected)
        assert expected.min() == 0 or expected.max() == 255  # each at full contrast


def test_four_channel_filters_share_one_scale_and_show_the_fourth_beside():
    weights = np.zeros((2, 4, 3, 3))
    weights[0, 0, 0, 0], weights[0, 3, 2, 2] = 1.0, -2.0  # channel 4 holds the peak
    normalised = normalise_filters(weights)
    assert normalised.shape == (2, 3, 3, 4)
    assert normalised[0, 2, 2, 3] == 0 and normalised[0, 0, 0, 0] == 191  # 127.5 + 127.5 / 2
    grid = np.asarray(filter_grid(weights, 1))
    size, cells = filter_grid_cells(2, (3, shown_width(3, 4)))
    assert grid.shape[1::-1] == size
    x, y, w, h = cells[0]
    assert np.array_equal(grid[y:y + h, x:x + w], shown_rgb(normalised[0]))
    with pytest.raises(ValueError):
        normalise_filters(np.ones((2, 2, 3, 3)))


def test_thumbnails_show_grey_and_of_four_channels_the_first_three():
    grey = _pictures(1, 2, 8, 8, 1)
    sheet = np.asarray(thumb_sheet(grey))
    assert np.array_equal(sheet[:8, :8], np.repeat(grey[0, 0], 3, axis=-1))
    rgba = _pictures(1, 2, 8, 8, 4)
    sheet = np.asarray(thumb_sheet(rgba))
    # the box drawn on a thumbnail needs the image's shape: two 8 px cells, no fourth beside
    assert sheet.shape[1::-1] == sheet_size(1, 2, 8)
    assert np.array_equal(sheet[:8, :8], rgba[0, 0, ..., :3])
