"""Turn a projection into an 8-bit image for the atlas: a robust, documented contrast.

The paper contrast-normalises every projection on its own before showing it. Projections are
signed (negative evidence matters as much as positive), so zero is shown as mid-grey 128 and
values are scaled symmetrically, all channels by the same scale:

    v = clip(p / s, -1, 1),   s = the CLIP_PERCENTILE-th percentile of |p|
    m = max over the pixel's channels of |v|
    shown = 128 + 127 * v * m ** (GAMMA - 1)      (128 where m = 0)

over every value of that projection (all pixels, all channels). Scaling by the single largest
value lets a few extreme pixels leave everything else grey; the percentile ignores them, and
the few values above it saturate. A projection is sparse: its strongest values sit where the
unit looked, and the weaker structure around them (the rest of the edge, the stripes beside)
falls within a few grey levels of mid-grey when shown linearly. GAMMA = 0.5 lifts that
structure (on the demo, pixels within +-16 of grey: 65-73 % linear, 36-42 % with it) while
keeping zero grey, the sign and the order of values; it scales each pixel's channels by one
factor (a square root of the pixel's strongest channel), so the pixel's hue, the ratio of its
channels, is kept. A projection has the network's input channels (1 for a greyscale model: the
same formula, one channel; :mod:`pipeline.atlas.channels` draws it in grey). When the
percentile is zero (a projection with very few non-zero values) the largest value is used
instead. An all-zero projection (a dead unit) is uniform grey; non-finite values count as zero.
The projection itself is never changed: this is only how it is shown, and ``projections.zarr``
keeps the exact values.
"""

from __future__ import annotations

import numpy as np

GREY = 128
CLIP_PERCENTILE = 99.0
GAMMA = 0.5


def display_scale(projection: np.ndarray, percentile: float = CLIP_PERCENTILE) -> float:
    """The value shown at full contrast (see the module doc); 0 for an all-zero projection."""
    magnitude = np.abs(np.nan_to_num(np.asarray(projection, dtype=np.float64), nan=0.0,
                                     posinf=0.0, neginf=0.0))
    if magnitude.size == 0:
        return 0.0
    scale = float(np.percentile(magnitude, percentile))
    return scale if scale > 0 else float(magnitude.max())


def to_display(projection_hwc: np.ndarray, percentile: float = CLIP_PERCENTILE,
               gamma: float = GAMMA) -> np.ndarray:
    """uint8 ``[h, w, C]`` image: ``128 + 127 * v * m ** (gamma - 1)`` with
    ``v = clip(p / s, -1, 1)`` and ``m`` the pixel's largest ``|v|`` (module doc)."""
    p = np.nan_to_num(np.asarray(projection_hwc, dtype=np.float64), nan=0.0, posinf=0.0,
                      neginf=0.0)
    scale = display_scale(p, percentile)
    if scale == 0.0:
        return np.full(p.shape, GREY, dtype=np.uint8)
    v = np.clip(p / scale, -1.0, 1.0)
    strongest = np.abs(v).max(axis=-1, keepdims=True)
    lift = np.divide(strongest ** gamma, strongest, out=np.zeros_like(strongest),
                     where=strongest > 0)
    shown = GREY + 127.0 * v * lift
    return np.clip(np.rint(shown), 0, 255).astype(np.uint8)
