"""Turn a projection into an 8-bit image for the atlas.

The paper contrast-normalises every projection on its own before showing it. Projections are
signed (negative evidence matters as much as positive), so zero is shown as mid-grey 128 and
values are scaled symmetrically by the tile's largest absolute value over all channels together:
-max maps to 1, +max to 255. Keeping the channels together preserves the projection's hue; keeping
zero fixed means grey always means "no contribution" and tiles are comparable in sign. An all-zero
projection (a dead unit) is uniform grey. Non-finite values are treated as zero.
"""

from __future__ import annotations

import numpy as np

GREY = 128


def to_display(projection_hwc: np.ndarray) -> np.ndarray:
    """uint8 image of the same shape: 128 + 127 * p / max|p| (uniform 128 if p is all zero)."""
    p = np.nan_to_num(np.asarray(projection_hwc, dtype=np.float64), nan=0.0, posinf=0.0,
                      neginf=0.0)
    peak = float(np.abs(p).max()) if p.size else 0.0
    if peak == 0.0:
        return np.full(p.shape, GREY, dtype=np.uint8)
    return np.clip(np.rint(GREY + 127.0 * p / peak), 0, 255).astype(np.uint8)
