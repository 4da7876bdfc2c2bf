"""Weak units: units that fire, but so little that their pictures say little.

A projection drawn on its own scale is stretched to full contrast whatever its size, so a unit
whose largest activation is a tenth of its neighbours' looks as confident as they do. The atlas
marks such a unit *weak* (on its card, counted beside the dead units, sortable) when

- its peak (largest activation over the data set) is below WEAK_PEAK_SHARE of the median peak
  of the layer's live units, or
- it fires (a non-zero maximum) in fewer than WEAK_ACTIVE_SHARE of the analysed images.

A dead unit (peak zero) is dead, not weak. Only numpy: the rule is a function of two columns
of the rank stage's ``units.parquet``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

WEAK_PEAK_SHARE = 0.1  # of the layer's median live peak
WEAK_ACTIVE_SHARE = 0.005  # of the images: 250 of ImageNet's 50,000, 5 of the demo's 1,000

RULE = (f"a live unit whose peak is below {WEAK_PEAK_SHARE:.0%} of the layer's median peak, or "
        f"that fires in fewer than {WEAK_ACTIVE_SHARE:.1%} of the images")


def median_live_peak(peaks: npt.ArrayLike, dead: npt.ArrayLike) -> float:
    """The median peak of a layer's live units (0 when none is): what "weak" is measured by."""
    peaks = np.asarray(peaks, dtype=np.float64)
    live = ~np.asarray(dead, dtype=bool) & (peaks > 0)
    return float(np.median(peaks[live])) if live.any() else 0.0


def weak_units(peaks: np.ndarray, frac_active: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Boolean per unit of one layer: whether it is weak (module doc)."""
    peaks = np.asarray(peaks, dtype=np.float64)
    frac_active = np.asarray(frac_active, dtype=np.float64)
    live = ~np.asarray(dead, dtype=bool) & (peaks > 0)
    median = median_live_peak(peaks, dead)
    return live & ((peaks < WEAK_PEAK_SHARE * median) | (frac_active < WEAK_ACTIVE_SHARE))
