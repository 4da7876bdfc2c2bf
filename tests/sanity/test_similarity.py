"""The measures: SSIM, Spearman, local contrast and the part of a tile inside the image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.sanity.similarity import local_contrast, magnitude, spearman, ssim, valid_region


def test_ssim_of_a_map_with_itself_is_1_and_with_independent_noise_about_0():
    rng = np.random.default_rng(0)
    image = rng.random((48, 48))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, 3.0 * image) == pytest.approx(1.0, abs=1e-12)  # each to its own max
    assert abs(ssim(image, rng.random((48, 48)))) < 0.05
    # smaller than the 11 px window: the largest odd window that fits
    assert ssim(image[:7, :7], image[:7, :7]) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_its_formula_on_one_window():
    """A 3 x 3 map is one window (3 px): the formula with the Gaussian weights by hand."""
    x = np.array([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])
    y = np.array([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * x * x).sum() - mx ** 2, (w * y * y).sum() - my ** 2
    cxy = (w * x * y).sum() - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert ssim(x, y) == pytest.approx(expected, abs=1e-12)


def test_spearman_is_a_rank_correlation_with_averaged_ties():
    a = np.arange(20.0).reshape(4, 5)
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(spearman(a, np.zeros_like(a)))
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, 50).astype(float), rng.random(50)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y)[0], abs=1e-12)


def test_magnitude_sums_absolute_values_over_channels():
    projection = np.array([[[1.0, -2.0, 0.5]]])
    assert magnitude(projection).tolist() == [[3.5]]


def test_local_contrast_finds_edges_but_not_the_border_of_the_image():
    flat = np.full((9, 9, 3), 100, np.uint8)
    assert np.all(local_contrast(flat) == 0)
    step = flat.copy()
    step[:, 5:] = 200
    contrast = local_contrast(step)
    assert np.all(contrast[:, :3] == 0) and np.all(contrast[:, 7:] == 0)
    assert np.all(contrast[:, 4:6] > 0)


def test_the_valid_region_is_the_part_of_the_tile_inside_the_image():
    # a 7 px box hanging 2 px over the top-left corner of a 20 px image
    assert valid_region((-2, -2, 5, 5), (20, 20), (7, 7)) == (slice(2, 7), slice(2, 7))
    assert valid_region((3, 4, 10, 11), (20, 20), (7, 7)) == (slice(0, 7), slice(0, 7))
    # a box larger than the image: the tile is the whole image
    assert valid_region((-5, -5, 30, 30), (20, 20), (20, 20)) == (slice(0, 20), slice(0, 20))
