"""Stage ``rank``: each unit's top-k images and statistics, as parquet tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage

if TYPE_CHECKING:
    import zarr

    from pipeline.ranking import LayerRanking


@register_stage("rank", inputs=("activations",), sections=("rank",))
def rank(ctx: StageContext) -> None:
    """rank every unit's top images with dask"""
    import zarr

    from pipeline.ranking import rank_layers

    layout, k = ctx.layout, ctx.workflow.rank.top_k
    store = zarr.open_group(layout.activations, mode="r")
    labels = list(store.attrs["layers"])
    rankings = rank_layers(layout.activations, labels, k)
    true_labels = np.asarray(store["label"][:])
    topk_frames, unit_frames = [], []
    for label in labels:
        group = store[label]
        topk_frames.append(_topk_table(label, rankings[label], group, int(group.attrs["width"])))
        unit_frames.append(_unit_table(label, rankings[label], true_labels))
    topk = pd.concat(topk_frames, ignore_index=True)
    units = pd.concat(unit_frames, ignore_index=True)
    topk.to_parquet(ctx.output(layout.topk), index=False)
    units.to_parquet(ctx.output(layout.units), index=False)
    print(f"[rank] {len(units)} units in {len(labels)} layers, {int(units['dead'].sum())} dead")


def _topk_table(label: str, ranking: LayerRanking, group: zarr.Group, width: int) -> pd.DataFrame:
    """One row per (unit, rank) whose activation is positive: a unit that fired in fewer than k
    images gets fewer rows, and a dead unit none, never arbitrary zero-valued images."""
    k, channels = ranking.values.shape
    ranks, units = np.meshgrid(np.arange(k), np.arange(channels), indexing="ij")
    keep = ranking.values > 0
    ids, unit_ids = ranking.ids[keep], units[keep]
    where = np.asarray(group["argmax"].get_coordinate_selection((ids, unit_ids))) if keep.any() \
        else np.zeros(0, dtype=np.int64)
    frame = pd.DataFrame({
        "layer": label, "unit": unit_ids.astype(np.int32), "rank": ranks[keep].astype(np.int32),
        "image_id": ids.astype(np.int64), "value": ranking.values[keep].astype(np.float32),
        "y": (where // width).astype(np.int32), "x": (where % width).astype(np.int32),
    })
    return frame.sort_values(["unit", "rank"], ignore_index=True)


def _unit_table(label: str, ranking: LayerRanking, true_labels: np.ndarray) -> pd.DataFrame:
    """Per-unit statistics; the top class is the most frequent true class of its top images."""
    channels = ranking.values.shape[1]
    top_class = np.full(channels, -1, dtype=np.int32)
    share = np.zeros(channels, dtype=np.float32)
    for unit in range(channels):
        ids = ranking.ids[ranking.values[:, unit] > 0, unit]
        if len(ids):
            counts = np.bincount(true_labels[ids])
            top_class[unit] = int(counts.argmax())
            share[unit] = counts.max() / len(ids)
    return pd.DataFrame({
        "layer": label, "unit": np.arange(channels, dtype=np.int32),
        "peak": ranking.peak.astype(np.float32), "mean_max": ranking.mean_max.astype(np.float32),
        "std_max": ranking.std_max.astype(np.float32),
        "frac_active": ranking.frac_active.astype(np.float32),
        "dead": ranking.peak <= 0, "n_top": (ranking.values > 0).sum(axis=0).astype(np.int32),
        "top_class": top_class, "top_class_share": share,
    })
