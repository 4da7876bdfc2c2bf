"""How the deconv stage stores a batch of projections: each receptive-field tile divided by its
largest absolute value, exactly as tile by tile in float32 and then rounded to float16, with NaN
and infinities zeroed and an all-zero tile left as an unwritten one reads (+0.0, scale 0)."""

from __future__ import annotations

import numpy as np

from pipeline.interp.projection_store import _store_scaled
from pipeline.interp.receptive_field import field_tile


def test_tiles_are_scaled_as_one_at_a_time():
    rng = np.random.default_rng(0)
    projected = rng.normal(size=(5, 3, 9, 9)).astype(np.float32)
    projected[1] = -0.0  # all zero, negative zeros included
    projected[2, 0, 4, 4], projected[2, 1, 5, 5] = np.nan, -np.inf
    projected[4] = -np.abs(projected[4]) * 1e-3  # all negative, small: float16 rounding counts
    boxes = [(-2, -2, 3, 3), (0, 0, 5, 5), (3, 3, 8, 8), (6, 2, 11, 7), (2, 2, 7, 7)]
    which = np.array([0, 1, 2, 3, 4])
    units, ranks = np.array([0, 1, 1, 0, 2]), np.array([0, 0, 1, 1, 0])
    tiles = np.zeros((3, 2, 5, 5, 3), np.float16)
    scales = np.zeros((3, 2), np.float32)
    _store_scaled(projected, which, boxes, (5, 5), tiles, scales, units, ranks)
    for j, box in enumerate(boxes):
        tile = np.nan_to_num(field_tile(projected[j].transpose(1, 2, 0), box, (5, 5), 0.0),
                             nan=0.0, posinf=0.0, neginf=0.0)
        peak = np.abs(tile).max()
        assert scales[units[j], ranks[j]] == peak
        expected = tile / peak if peak > 0 else np.zeros_like(tile)  # float32, then float16
        stored = tiles[units[j], ranks[j]]
        assert np.array_equal(stored.view(np.uint16), expected.astype(np.float16).view(np.uint16))
    assert scales[1, 0] == 0 and not np.signbit(tiles[1, 0]).any()  # +0.0, as the store's fill
    assert np.isfinite(tiles).all() and np.abs(tiles).max() == 1
