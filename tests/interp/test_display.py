"""to_display: zero at mid-grey, symmetric stretch over all channels together, clipped at a
high percentile of |p| so that a few extreme values do not leave the rest grey."""

from __future__ import annotations

import numpy as np

from pipeline.interp import to_display
from pipeline.interp.display import CLIP_PERCENTILE, display_scale


def test_zero_projection_is_uniform_grey() -> None:
    out = to_display(np.zeros((5, 4, 3), dtype=np.float32))
    assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
    assert (out == 128).all()


def test_symmetric_stretch_with_zero_at_grey() -> None:
    p = np.array([[[-2.0, 0.0, 1.0], [0.5, 2.0, -1.0]]])
    out = to_display(p, percentile=100, gamma=1)
    assert out.tolist() == [[[1, 128, 192], [160, 255, 64]]]


def test_square_root_lifts_weak_pixels_keeping_sign_order_and_hue() -> None:
    p = np.array([[[-2.0, 0.0, 0.5], [0.02, 0.0, 0.0], [0.5, 0.25, -0.125]]])
    out = to_display(p, percentile=100)  # v = p / 2; each pixel scaled by sqrt(m) / m
    assert out[0, 0].tolist() == [1, 128, 160]  # m = 1: unchanged
    assert out[0, 1].tolist() == [141, 128, 128]  # 0.01 -> 0.1
    # m = 0.25 -> factor 2: the channels keep their ratios (the pixel's hue)
    assert out[0, 2].tolist() == [192, 160, 112]
    # monotone: a larger value is never shown darker
    ramp = np.linspace(-1, 1, 201).reshape(1, -1, 1).repeat(3, axis=2)
    shown = to_display(ramp, percentile=100)[0, :, 0].astype(int)
    assert (np.diff(shown) >= 0).all() and shown[100] == 128


def test_channels_scaled_together_and_per_projection() -> None:
    p = np.zeros((2, 2, 3))
    p[0, 0, 0] = 10.0
    p[1, 1, 2] = 1.0  # a weak channel is not stretched on its own
    out = to_display(p, percentile=100, gamma=1)
    assert out[0, 0, 0] == 255 and out[1, 1, 2] == 141
    # Per projection: scaling the whole projection does not change its display.
    np.testing.assert_array_equal(to_display(p * 1e-6, percentile=100, gamma=1), out)


def test_a_few_extreme_values_saturate_instead_of_greying_the_rest() -> None:
    rng = np.random.default_rng(0)
    p = rng.normal(0.0, 1.0, (40, 40, 3))
    p[0, 0, 0] = 1000.0  # one outlier
    by_max = to_display(p, percentile=100, gamma=1)
    robust = to_display(p, gamma=1)
    near_grey = lambda img: (np.abs(img.astype(int) - 128).max(axis=2) <= 16).mean()  # noqa: E731
    assert near_grey(by_max) > 0.99 and near_grey(robust) < 0.2
    assert near_grey(to_display(p)) < near_grey(robust)  # the square root lifts weak values
    assert robust[0, 0, 0] == 255  # the outlier saturates
    scale = display_scale(p)
    assert scale == np.percentile(np.abs(p), CLIP_PERCENTILE)
    # values at or beyond the scale are shown at full contrast, with their sign
    shown = to_display(p)
    assert (shown[np.abs(p) >= scale] % 254 == 1).all()  # 1 or 255


def test_sparse_projection_falls_back_to_its_largest_value() -> None:
    p = np.zeros((20, 20, 3))
    p[3, 4, 1] = -0.5  # fewer non-zero values than the percentile can see
    assert display_scale(p) == 0.5
    out = to_display(p)
    assert out[3, 4, 1] == 1 and (np.delete(out.reshape(-1), 3 * 60 + 4 * 3 + 1) == 128).all()


def test_only_negative_values_and_non_finite() -> None:
    out = to_display(np.array([[[-3.0, np.nan, np.inf]]]))
    assert out.tolist() == [[[1, 128, 128]]]


def test_a_known_scale_draws_the_picture_the_projection_s_own_scale_draws():
    """The atlas computes each projection's scale once and hands it to both curves."""
    from pipeline.interp.display import CURVES, curve_display, display_scale

    p = np.random.default_rng(3).standard_normal((9, 7, 3)).astype(np.float32)
    p[0, 0, 0], p[1, 1, 1] = np.nan, np.inf
    for curve in CURVES:
        assert np.array_equal(curve_display(p, curve, scale=display_scale(p)),
                              curve_display(p, curve))
    assert not np.array_equal(curve_display(p, "linear", scale=display_scale(p) / 4),
                              curve_display(p, "linear"))
