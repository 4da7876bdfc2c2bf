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
from pipeline.labelled import array_in
from pipeline.ranking.histogram import bin_edges, quantiles
from pipeline.ranking.partials import Partial
from pipeline.ranking.recheck import Measure, recheck
from pipeline.ranking.reduce import reduce_layers
from pipeline.schemas import Histograms, Selectivity, Topk, Units

SELECTIVITY_TOP = 100  # class selectivity is measured over each unit's top images
QUANTILES = (0.5, 0.9, 0.99, 0.999)


@dataclass
class RankTables:
    topk: pd.DataFrame
    units: pd.DataFrame
    selectivity: pd.DataFrame
    histograms: pd.DataFrame
    uncertain: int = 0  # units a bfloat16 store's re-check cannot vouch for (recheck.py)


def quantile_column(level: float) -> str:
    """``0.5`` -> ``"q50"``, ``0.99`` -> ``"q99"``, ``0.999`` -> ``"q999"``."""
    return "q" + f"{level * 100:g}".replace(".", "")


def rank_store(store_path: Path, k: int, scheduler: Any = None,
               rows: int | None = None, float32: Measure | None = None) -> RankTables:
    """Rank every layer of the activations store at ``store_path`` in one pass; with
    ``float32`` (a store recorded in bfloat16), each unit's top candidates are ordered by the
    float32 maxima it measures (:mod:`pipeline.ranking.recheck`)."""
    import zarr

    store = zarr.open_group(str(store_path), mode="r")
    layers = list(StoreMeta.from_attrs(store.attrs).layers)
    m = max(k, SELECTIVITY_TOP)
    partials = reduce_layers(store_path, layers, m, scheduler, rows)
    positions: dict[str, np.ndarray] = {}
    uncertain = 0
    if float32 is not None:
        rechecked = recheck(partials, k, float32)
        partials = {label: done.partial for label, done in rechecked.items()}
        positions = {label: done.argmax for label, done in rechecked.items()}
        uncertain = sum(done.uncertain for done in rechecked.values())
    true_classes = np.asarray(array_in(store, "label")[:])  # each image's class index
    tables: dict[str, list[pd.DataFrame]] = {"topk": [], "units": [], "sel": [], "hist": []}
    for layer in layers:
        group, part = store[layer], partials[layer]
        tables["topk"].append(topk_table(layer, part, k, group, positions.get(layer)))
        units, sel = unit_table(layer, part, true_classes, k)
        tables["units"].append(units)
        tables["sel"].append(sel)
        tables["hist"].append(histogram_table(layer, part))
    topk, units, selectivity, histograms = (pd.concat(frames, ignore_index=True)
                                            for frames in tables.values())
    return RankTables(topk, units, selectivity, histograms, uncertain)


def topk_table(layer: str, part: Partial, k: int, group: Any,
               argmax: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (unit, rank) whose activation is positive: a unit that fired in fewer than k
    images gets fewer rows, and a dead unit none, never arbitrary zero-valued images. The
    positions are the store's, or ``argmax [k, C]`` (flattened) where given."""
    values, ids = part.values[:k], part.ids[:k]
    ranks, units = np.meshgrid(np.arange(len(values)), np.arange(values.shape[1]), indexing="ij")
    keep = values > 0
    ids, unit_ids = ids[keep], units[keep]
    if argmax is not None:
        where = argmax[:len(values)][keep]
    elif keep.any():
        where = np.asarray(group["argmax"].get_coordinate_selection((ids, unit_ids)))
    else:
        where = np.zeros(0, dtype=np.int64)
    width = LayerMeta.from_attrs(group.attrs).width
    frame = pd.DataFrame({
        Topk.layer: layer, Topk.unit: unit_ids.astype(np.int32),
        Topk.rank: ranks[keep].astype(np.int32), Topk.image_id: ids.astype(np.int64),
        Topk.value: values[keep].astype(np.float32), Topk.y: (where // width).astype(np.int32),
        Topk.x: (where % width).astype(np.int32),
    })
    return frame.sort_values([Topk.unit, Topk.rank], ignore_index=True)


def unit_table(layer: str, part: Partial, true_classes: np.ndarray, k: int
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
        classes, counts = np.unique(true_classes[ids], return_counts=True)
        p = counts / counts.sum()
        best = int(np.argmax(counts))  # np.unique sorts classes: ties go to the lower class
        top_class[unit], share[unit] = classes[best], p[best]
        entropy[unit], n_selective[unit] = max(0.0, float(-(p * np.log2(p)).sum())), len(ids)
        rows.append(pd.DataFrame({Selectivity.layer: layer, Selectivity.unit: np.int32(unit),
                                  Selectivity.class_index: classes.astype(np.int32),
                                  Selectivity.count: counts.astype(np.int32)}))
    peak = part.values[0] if len(part.values) else np.full(channels, -np.inf, np.float32)
    # Interpolating inside the top bin can overshoot the exact maximum: never report more.
    levels = np.minimum(quantiles(part.histogram, QUANTILES), np.where(peak > -np.inf, peak, 0))
    units = pd.DataFrame({
        Units.layer: layer, Units.unit: np.arange(channels, dtype=np.int32),
        Units.peak: peak.astype(np.float32), Units.mean_max: mean.astype(np.float32),
        Units.std_max: np.sqrt(np.maximum(part.total_sq / count - mean * mean, 0.0)).astype(
            np.float32),
        Units.frac_active: (part.active / count).astype(np.float32),
        **{quantile_column(q): levels[i].astype(np.float32) for i, q in enumerate(QUANTILES)},
        Units.dead: ~(peak > 0), Units.n_top: (part.values[:k] > 0).sum(axis=0).astype(np.int32),
        Units.top_class: top_class, Units.top_class_share: share, Units.class_entropy: entropy,
        Units.n_selectivity: n_selective,
    })
    selectivity = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        {Selectivity.layer: pd.Series(dtype=str), Selectivity.unit: pd.Series(dtype=np.int32),
         Selectivity.class_index: pd.Series(dtype=np.int32),
         Selectivity.count: pd.Series(dtype=np.int32)})
    return units, selectivity


def histogram_table(layer: str, part: Partial) -> pd.DataFrame:
    """The non-empty histogram bins: (layer, unit, low, high, count)."""
    edges = bin_edges()
    units, bins = np.nonzero(part.histogram)
    return pd.DataFrame({
        Histograms.layer: layer, Histograms.unit: units.astype(np.int32),
        Histograms.low: edges[bins].astype(np.float32),
        Histograms.high: edges[bins + 1].astype(np.float32),
        Histograms.count: part.histogram[units, bins].astype(np.int64),
    })
