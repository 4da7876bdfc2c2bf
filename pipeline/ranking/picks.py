"""Which units stand for a layer: its most class-selective ones, as the atlas's index strips
show them, and when a class may be named for a unit at all.

One definition for everyone who picks: the index strips (:meth:`LayerEntry.most_selective
<pipeline.atlas.context.LayerEntry.most_selective>`) and ``[featurevis] units``, which
optimises the units the strips show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.schemas import Units

# A card names a class only when the data support it: at least this share of the unit's top
# images, at least CHANCE_FACTOR times the share the class has among all analysed images (what
# a unit blind to classes would see; capped at MAX_CHANCE_SHARE so that a data set of two
# classes can name one), and at least MIN_NAMED images counted.
DOMINANT_SHARE = 0.5
CHANCE_FACTOR = 3.0
MAX_CHANCE_SHARE = 0.9
MIN_NAMED = 5


def dominant_class(share: float, n_counted: int, prior: float) -> bool:
    """Whether a unit's most frequent class (``share`` of its ``n_counted`` top images, and
    ``prior`` of all analysed images) clearly dominates its top images."""
    if n_counted < MIN_NAMED:
        return False
    return share >= DOMINANT_SHARE and share >= min(CHANCE_FACTOR * prior, MAX_CHANCE_SHARE)


def class_priors(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of the analysed images that were read (``predictions`` >= 0): its
    chance of being a top image."""
    read = labels[(predictions >= 0) & (labels >= 0)]
    counts = np.bincount(read, minlength=n_classes)[:n_classes]
    return counts / max(1, counts.sum())


def selectivity_order(n_images: int, most_images: int, named: bool, share: float,
                      peak: float, unit: int) -> tuple:
    """Sort key of a live unit in its layer's strip: units with all their top images first (a
    unit that fired in two images is "selective" only by accident), then those with a named
    class, the larger share of one class, the stronger, the lower number."""
    return (n_images < most_images, not named, -share, -peak, unit)


def most_selective(units: pd.DataFrame, priors: np.ndarray, n: int) -> list[int]:
    """The numbers of the ``n`` live units of one layer's rows of ``units.parquet`` that its
    index strip shows, in the strip's order."""
    live = units[~units[Units.dead].to_numpy(bool) & (units[Units.n_top].to_numpy() > 0)]
    most = int(live[Units.n_top].max()) if len(live) else 0
    keys = []
    for row in live.itertuples(index=False):
        top = int(getattr(row, Units.top_class))
        share, counted = float(getattr(row, Units.top_class_share)), int(
            getattr(row, Units.n_selectivity))
        named = top >= 0 and dominant_class(share, counted, float(priors[top]))
        unit = int(getattr(row, Units.unit))
        keys.append((selectivity_order(int(getattr(row, Units.n_top)), most, named, share,
                                       float(getattr(row, Units.peak)), unit), unit))
    return [unit for _, unit in sorted(keys)[:n]]
