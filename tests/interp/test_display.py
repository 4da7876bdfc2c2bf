"""to_display: zero at mid-grey, symmetric per-tile stretch over all channels together."""

from __future__ import annotations

import numpy as np

from pipeline.interp import to_display


def test_zero_projection_is_uniform_grey() -> None:
    out = to_display(np.zeros((5, 4, 3), dtype=np.float32))
    assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
    assert (out == 128).all()


def test_symmetric_stretch_with_zero_at_grey() -> None:
    p = np.array([[[-2.0, 0.0, 1.0], [0.5, 2.0, -1.0]]])
    out = to_display(p)
    assert out.tolist() == [[[1, 128, 192], [160, 255, 64]]]


def test_channels_scaled_together_and_per_tile() -> None:
    p = np.zeros((2, 2, 3))
    p[0, 0, 0] = 10.0
    p[1, 1, 2] = 1.0  # a weak channel is not stretched on its own
    out = to_display(p)
    assert out[0, 0, 0] == 255 and out[1, 1, 2] == 141
    # Per tile: scaling the whole projection does not change its display.
    np.testing.assert_array_equal(to_display(p * 1e-6), out)


def test_only_negative_values_and_non_finite() -> None:
    out = to_display(np.array([[[-3.0, np.nan, np.inf]]]))
    assert out.tolist() == [[[1, 128, 128]]]
