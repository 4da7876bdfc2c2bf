"""How alike two pictures of one activation are, and how much a picture follows its image.

Every figure compares *magnitude maps*: a projection ``[h, w, C]`` becomes ``sum_c |p|`` per
pixel (:func:`magnitude`), since the sign of a projection flips with the method's rule and the
sanity check asks where a picture puts its weight, not which way. Pixels outside the image (a
tile padded where a unit's field reaches past the border) are left out of every figure: they
are zero in every projection and would count as agreement (:func:`valid_region`).

- :func:`spearman`: the rank correlation of two maps' pixels (Pearson's r of their ranks, ties
  averaged), as Adebayo et al. (2018) report it; NaN when either map is constant.
- :func:`ssim`: the structural similarity of Wang et al. (2004) of two maps, each first divided
  by its own largest value (so both lie in [0, 1], data range L = 1): local means, variances
  and covariance under a Gaussian window of 11 x 11 pixels, sigma 1.5 (on maps smaller than
  11 pixels, the largest odd window that fits, same sigma), C1 = (0.01 L)^2, C2 = (0.03 L)^2,
  ``((2 mx my + C1)(2 sxy + C2)) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2))`` averaged over every
  position where the whole window fits (no padding).
- :func:`local_contrast`: an image patch's edges, the Sobel gradient magnitude of its grey
  values (ITU-R 601 luma of an RGB patch, the mean of the channels otherwise), with the
  border pixels repeated outwards so the edge of the image is not an edge of the picture.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.interp.receptive_field import field_tile

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
LUMA = (0.299, 0.587, 0.114)


def magnitude(projection_hwc: np.ndarray) -> np.ndarray:
    """``sum over channels of |projection|`` per pixel, float64 (non-finite values count 0)."""
    values = np.nan_to_num(np.asarray(projection_hwc, dtype=np.float64), nan=0.0, posinf=0.0,
                           neginf=0.0)
    return np.abs(values).sum(axis=-1)


def valid_region(box: tuple[int, int, int, int], image_hw: tuple[int, int],
                 tile_hw: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of a unit's tile (``field_tile`` of ``box``) that lie inside the
    image: the same rule as the crop itself, applied to a mask of the image."""
    inside = field_tile(np.ones(image_hw, dtype=bool), box, tile_hw, False)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if not len(rows) or not len(cols):
        return slice(0, 0), slice(0, 0)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps' pixels; NaN when either map is constant."""
    x, y = np.ravel(a), np.ravel(b)
    if x.shape != y.shape:
        raise ValueError(f"maps of different sizes: {np.shape(a)} and {np.shape(b)}")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float(np.dot(rx, ry) / np.sqrt(np.dot(rx, rx) * np.dot(ry, ry)))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing their average rank (scipy's ``rankdata``, faster on
    the small maps compared here)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def _window(side: int) -> np.ndarray:
    half = side // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    weights = np.exp(-offsets ** 2 / (2 * SIGMA ** 2))
    return weights / weights.sum()


def _filtered(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The separable Gaussian filter over every position where the window fits whole."""
    side = len(weights)
    rows = np.lib.stride_tricks.sliding_window_view(image, side, axis=0) @ weights
    return np.lib.stride_tricks.sliding_window_view(rows, side, axis=1) @ weights


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two non-negative maps, each divided by its own maximum (module doc); NaN for
    an empty map."""
    x, y = (np.asarray(m, dtype=np.float64) for m in (a, b))
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two maps of one 2-D shape, got {x.shape} and {y.shape}")
    side = min(WINDOW, *x.shape)
    side -= 1 - side % 2  # odd: the window has a centre
    if side < 1:
        return float("nan")
    x, y = (m / m.max() if m.max() > 0 else m for m in (x, y))
    weights = _window(side)
    mx, my = _filtered(x, weights), _filtered(y, weights)
    sxx = _filtered(x * x, weights) - mx * mx
    syy = _filtered(y * y, weights) - my * my
    sxy = _filtered(x * y, weights) - mx * my
    c1, c2 = K1 ** 2, K2 ** 2
    index = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(index.mean())


def grey(patch_hwc: np.ndarray) -> np.ndarray:
    """A patch's grey values: the luma of RGB (and of RGBA's colour), else the channel mean."""
    values = np.asarray(patch_hwc, dtype=np.float64)
    if values.shape[-1] in (3, 4):
        return values[..., :3] @ np.asarray(LUMA)
    return values.mean(axis=-1)


def local_contrast(patch_hwc: np.ndarray) -> np.ndarray:
    """The Sobel gradient magnitude of the patch's grey values (border pixels repeated)."""
    values = grey(patch_hwc)
    return np.hypot(ndimage.sobel(values, axis=0, mode="nearest"),
                    ndimage.sobel(values, axis=1, mode="nearest"))
