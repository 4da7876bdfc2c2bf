"""How the deconv stage stores a batch of projections: each receptive-field tile divided by its
largest absolute value, exactly as tile by tile, with NaN and infinities zeroed and an all-zero
tile left as an unwritten one reads (+0.0, scale 0)."""

from __future__ import annotations

import numpy as np

from pipeline.interp.projection_store import _scaled_tiles
from pipeline.interp.receptive_field import field_tile


def test_tiles_are_scaled_as_one_at_a_time():
    rng = np.random.default_rng(0)
    projected = rng.normal(size=(4, 3, 9, 9)).astype(np.float32)
    projected[1] = -0.0  # all zero, negative zeros included
    projected[2, 0, 4, 4], projected[2, 1, 5, 5] = np.nan, -np.inf
    boxes = [(-2, -2, 3, 3), (0, 0, 5, 5), (3, 3, 8, 8), (6, 2, 11, 7)]  # clipped and padded
    which = np.array([0, 1, 2, 3])
    tiles, peaks = _scaled_tiles(projected, which, boxes, (5, 5))
    for j, box in enumerate(boxes):
        tile = np.nan_to_num(field_tile(projected[j].transpose(1, 2, 0), box, (5, 5), 0.0),
                             nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(np.abs(tile).max())
        assert peaks[j] == np.float32(peak)
        expected = tile / peak if peak > 0 else np.zeros_like(tile)
        np.testing.assert_array_equal(tiles[j].astype(np.float16), expected.astype(np.float16))
    assert peaks[1] == 0 and not np.signbit(tiles[1]).any()  # +0.0, as the store's fill
    assert np.isfinite(tiles).all() and np.abs(tiles).max() == 1
