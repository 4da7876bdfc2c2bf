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

The reader chooses the curve (:data:`CURVES`): *linear* is the formula with GAMMA 1 (the
engine's output, zero at mid-grey, +-the 99th percentile at the ends), *lifted* the formula
above with GAMMA 0.5. A layer's projections can also share one scale (:func:`common_ratio`): each
is drawn as on its own scale and then brought towards mid-grey by its scale over the layer's
largest, so that a weak unit looks weak.
"""

from __future__ import annotations

import numpy as np

GREY = 128
CLIP_PERCENTILE = 99.0
GAMMA = 0.5
#: The display curves a reader can choose, with their GAMMA: the engine's output as it is, or
#: the weak structure lifted (the signed square root of each pixel's strongest channel).
CURVES = {"linear": 1.0, "lifted": GAMMA}


def display_scale(projection: np.ndarray, percentile: float = CLIP_PERCENTILE) -> float:
    """The value shown at full contrast (see the module doc); 0 for an all-zero projection."""
    magnitude = np.abs(np.nan_to_num(np.asarray(projection, dtype=np.float64), nan=0.0,
                                     posinf=0.0, neginf=0.0))
    if magnitude.size == 0:
        return 0.0
    scale = float(np.percentile(magnitude, percentile))
    return scale if scale > 0 else float(magnitude.max())


def to_display(projection_hwc: np.ndarray, percentile: float = CLIP_PERCENTILE,
               gamma: float = GAMMA, scale: float | None = None) -> np.ndarray:
    """uint8 ``[h, w, C]`` image: ``128 + 127 * v * m ** (gamma - 1)`` with
    ``v = clip(p / s, -1, 1)`` and ``m`` the pixel's largest ``|v|`` (module doc); ``scale``:
    the projection's :func:`display_scale` at ``percentile`` when the caller has it (the atlas
    draws each projection through both curves and keeps its scale: the percentile, a partial
    sort of the picture, was computed three times)."""
    p = np.nan_to_num(np.asarray(projection_hwc, dtype=np.float64), nan=0.0, posinf=0.0,
                      neginf=0.0)
    if scale is None:
        scale = display_scale(p, percentile)
    if scale == 0.0:
        return np.full(p.shape, GREY, dtype=np.uint8)
    v = np.clip(p / scale, -1.0, 1.0)
    strongest = np.abs(v).max(axis=-1, keepdims=True)
    lift = np.divide(strongest ** gamma, strongest, out=np.zeros_like(strongest),
                     where=strongest > 0)
    shown = GREY + 127.0 * v * lift
    return np.clip(np.rint(shown), 0, 255).astype(np.uint8)


def curve_display(projection_hwc: np.ndarray, curve: str,
                  percentile: float = CLIP_PERCENTILE, scale: float | None = None
                  ) -> np.ndarray:
    """uint8 ``[h, w, C]`` image of a projection on its own scale (``scale``: its
    :func:`display_scale`, when known) through ``curve``, one of :data:`CURVES` (the module
    doc)."""
    if curve not in CURVES:
        raise ValueError(f"unknown display curve {curve!r}; use one of {sorted(CURVES)}")
    return to_display(projection_hwc, percentile, CURVES[curve], scale)


#: A browser's filter works in 8 bits: a ratio is rounded down to a multiple of 1/RATIO_STEPS
#: (so a picture is never drawn brighter than on its own scale).
RATIO_STEPS = 255
#: The layer's common scale: this percentile of its projections' own scales. The largest would
#: let one outlier grey out the whole layer; the few projections above it are drawn on their
#: own scale, as saturated as the common scale would show them.
COMMON_PERCENTILE = 99.0


def common_scale(scales: list[float] | np.ndarray) -> float:
    """A layer's common display scale from its projections' own (:data:`COMMON_PERCENTILE`;
    0 when there are none)."""
    values = np.asarray(scales, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.percentile(values, COMMON_PERCENTILE)) if values.size else 0.0


def common_ratio(scale: float, layer_scale: float, curve: str) -> float:
    """How far a projection drawn on its own ``scale`` is brought towards mid-grey to show it on
    the layer's common scale ``layer_scale`` (:func:`common_scale`): ideally
    ``128 + ratio * (own - 128)``; the atlas draws it with CSS ``contrast(ratio)``, which
    computes ``127.5 + ratio * (own - 127.5)`` (at most half a level apart) and rounds once:
    within 1/255 of the float value (measured in Chromium).

    Linear: ``ratio = scale / layer_scale``, so every value reads as ``p / layer_scale`` (values
    beyond the projection's own percentile stay saturated, at the ratio). Lifted: the square
    root of that, because ``v * max|v| ** (gamma - 1)`` scales by ``r ** gamma`` when ``v``
    scales by ``r``. Both are rounded down to a multiple of 1/RATIO_STEPS.
    A layer without any non-zero projection gives 1."""
    if curve not in CURVES:
        raise ValueError(f"unknown display curve {curve!r}; use one of {sorted(CURVES)}")
    if not layer_scale > 0 or not np.isfinite(layer_scale):
        return 1.0
    ratio = min(1.0, max(0.0, float(scale) / float(layer_scale)))
    ratio = ratio ** CURVES[curve]  # v * m ** (gamma - 1) scales by r ** gamma
    return float(np.floor(ratio * RATIO_STEPS + 1e-9) / RATIO_STEPS)
