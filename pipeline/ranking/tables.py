"""The rank stage's tables, built from each layer's merged :class:`Partial`.

- ``topk``: one row per (unit, rank) with a positive activation: image, value, position;
- ``units``: per-unit statistics of the per-image maxima, quantiles and class selectivity;
- ``selectivity``: the true-class histogram of each unit's top-``SELECTIVITY_TOP`` images;
- ``histograms``: the non-empty bins of each unit's histogram of per-image maxima.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.inference.store import LayerMeta, StoreMeta
from pipeline.ranking.histogram import bin_edges, quantiles
from pipeline.ranking.partials import Partial
from pipeline.ranking.reduce import reduce_layers

SELECTIVITY_TOP = 100  # class selectivity is measured over each unit's top images
QUANTILES = (0.5, 0.9, 0.99, 0.999)


@dataclass
class RankTables:
    topk: pd.DataFrame
    units: pd.DataFrame
    selectivity: pd.DataFrame
    histograms: pd.DataFrame


def quantile_column(level: float) -> str:
    """``0.5`` -> ``"q50"``, ``0.99`` -> ``"q99"``, ``0.999`` -> ``"q999"``."""
    return "q" + f"{level * 100:g}".replace(".", "")


def rank_store(store_path: Path, k: int, scheduler: Any = None,
               rows: int | None = None) -> RankTables:
    """Rank every layer of the activations store at ``store_path`` in one pass."""
    import zarr

    store = zarr.open_group(str(store_path), mode="r")
    labels = list(StoreMeta.from_attrs(store.attrs).layers)
    m = max(k, SELECTIVITY_TOP)
    partials = reduce_layers(store_path, labels, m, scheduler, rows)
    true_labels = np.asarray(store["label"][:])
    tables: dict[str, list[pd.DataFrame]] = {"topk": [], "units": [], "sel": [], "hist": []}
    for label in labels:
        group, part = store[label], partials[label]
        tables["topk"].append(topk_table(label, part, k, group))
        units, sel = unit_table(label, part, true_labels, k)
        tables["units"].append(units)
        tables["sel"].append(sel)
        tables["hist"].append(histogram_table(label, part))
    return RankTables(*(pd.concat(frames, ignore_index=True) for frames in tables.values()))


def topk_table(label: str, part: Partial, k: int, group: Any) -> pd.DataFrame:
    """One row per (unit, rank) whose activation is positive: a unit that fired in fewer than k
    images gets fewer rows, and a dead unit none, never arbitrary zero-valued images."""
    values, ids = part.values[:k], part.ids[:k]
    ranks, units = np.meshgrid(np.arange(len(values)), np.arange(values.shape[1]), indexing="ij")
    keep = values > 0
    ids, unit_ids = ids[keep], units[keep]
    where = np.asarray(group["argmax"].get_coordinate_selection((ids, unit_ids))) if keep.any() \
        else np.zeros(0, dtype=np.int64)
    width = LayerMeta.from_attrs(group.attrs).width
    frame = pd.DataFrame({
        "layer": label, "unit": unit_ids.astype(np.int32), "rank": ranks[keep].astype(np.int32),
        "image_id": ids.astype(np.int64), "value": values[keep].astype(np.float32),
        "y": (where // width).astype(np.int32), "x": (where % width).astype(np.int32),
    })
    return frame.sort_values(["unit", "rank"], ignore_index=True)


def unit_table(label: str, part: Partial, true_labels: np.ndarray, k: int
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-unit statistics, and the class histogram of each unit's top images (positive only);
    ``n_top`` counts the unit's rows in the top-k table."""
    channels = part.values.shape[1]
    count = max(part.count, 1)
    mean = part.total / count
    top_class = np.full(channels, -1, dtype=np.int32)
    share = np.zeros(channels, dtype=np.float32)
    entropy = np.full(channels, np.nan, dtype=np.float32)  # undefined without top images
    n_selective = np.zeros(channels, dtype=np.int32)
    rows = []
    for unit in range(channels):
        ids = part.ids[part.values[:, unit] > 0, unit][:SELECTIVITY_TOP]
        if not len(ids):
            continue
        classes, counts = np.unique(true_labels[ids], return_counts=True)
        p = counts / counts.sum()
        best = int(np.argmax(counts))  # np.unique sorts classes: ties go to the lower class
        top_class[unit], share[unit] = classes[best], p[best]
        entropy[unit], n_selective[unit] = max(0.0, float(-(p * np.log2(p)).sum())), len(ids)
        rows.append(pd.DataFrame({"layer": label, "unit": np.int32(unit),
                                  "class": classes.astype(np.int32),
                                  "count": counts.astype(np.int32)}))
    peak = part.values[0] if len(part.values) else np.full(channels, -np.inf, np.float32)
    # Interpolating inside the top bin can overshoot the exact maximum: never report more.
    levels = np.minimum(quantiles(part.histogram, QUANTILES), np.where(peak > -np.inf, peak, 0))
    units = pd.DataFrame({
        "layer": label, "unit": np.arange(channels, dtype=np.int32),
        "peak": peak.astype(np.float32), "mean_max": mean.astype(np.float32),
        "std_max": np.sqrt(np.maximum(part.total_sq / count - mean * mean, 0.0)).astype(
            np.float32),
        "frac_active": (part.active / count).astype(np.float32),
        **{quantile_column(q): levels[i].astype(np.float32) for i, q in enumerate(QUANTILES)},
        "dead": ~(peak > 0), "n_top": (part.values[:k] > 0).sum(axis=0).astype(np.int32),
        "top_class": top_class, "top_class_share": share, "class_entropy": entropy,
        "n_selectivity": n_selective,
    })
    selectivity = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        {"layer": pd.Series(dtype=str), "unit": pd.Series(dtype=np.int32),
         "class": pd.Series(dtype=np.int32), "count": pd.Series(dtype=np.int32)})
    return units, selectivity


def histogram_table(label: str, part: Partial) -> pd.DataFrame:
    """The non-empty histogram bins: (layer, unit, low, high, count)."""
    edges = bin_edges()
    units, bins = np.nonzero(part.histogram)
    return pd.DataFrame({
        "layer": label, "unit": units.astype(np.int32), "low": edges[bins].astype(np.float32),
        "high": edges[bins + 1].astype(np.float32),
        "count": part.histogram[units, bins].astype(np.int64),
    })
