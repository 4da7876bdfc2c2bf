"""Top-k images and statistics of every unit, computed with dask over the activations store.

Each block of images yields its own top-k candidates per unit plus partial sums; the candidates
of all blocks are merged at the end. Memory is bounded by the block size, not by the number of
images, and ordering by (value descending, image id ascending) makes the result identical for
any chunking: ties go to the lower image id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np


@dataclass
class BlockPartial:
    """One block's contribution: top-k candidates ``[<=k, C]`` and partial sums ``[C]``."""

    values: np.ndarray
    ids: np.ndarray
    count: int
    total: np.ndarray
    total_sq: np.ndarray
    active: np.ndarray
    peak: np.ndarray


@dataclass
class LayerRanking:
    """The merged result for one layer: ``values``/``ids`` ``[k, C]`` sorted best first."""

    values: np.ndarray
    ids: np.ndarray
    peak: np.ndarray
    mean_max: np.ndarray
    std_max: np.ndarray
    frac_active: np.ndarray


def block_partial(values: np.ndarray, offset: int, k: int) -> BlockPartial:
    """Top-k candidates of one block; a stable sort keeps the lower image id first among ties."""
    values = np.asarray(values, dtype=np.float32)
    readable = ~np.isnan(values[:, 0]) if values.shape[1] else np.ones(len(values), bool)
    # Skipped (unreadable) images are NaN: rank them below every real value, count them nowhere.
    ranked = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(-ranked, axis=0, kind="stable")[:k]
    as64 = values[readable].astype(np.float64)
    return BlockPartial(
        values=np.take_along_axis(ranked, order, axis=0),
        ids=(order + offset).astype(np.int64),
        count=int(readable.sum()),
        total=as64.sum(axis=0),
        total_sq=(as64 * as64).sum(axis=0),
        active=(values > 0).sum(axis=0),
        peak=ranked.max(axis=0) if len(values) else np.full(values.shape[1], -np.inf),
    )


def merge_partials(partials: list[BlockPartial], k: int) -> LayerRanking:
    """Merge the blocks' candidates into the final top-k (value desc, image id asc)."""
    values = np.concatenate([part.values for part in partials])
    ids = np.concatenate([part.ids for part in partials])
    order = np.lexsort((ids, -values), axis=0)[:k]
    count = max(1, sum(part.count for part in partials))
    total = np.sum([part.total for part in partials], axis=0)
    total_sq = np.sum([part.total_sq for part in partials], axis=0)
    mean = total / count
    return LayerRanking(
        values=np.take_along_axis(values, order, axis=0),
        ids=np.take_along_axis(ids, order, axis=0),
        peak=np.max([part.peak for part in partials], axis=0),
        mean_max=mean,
        std_max=np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0)),
        frac_active=np.sum([part.active for part in partials], axis=0) / count,
    )


def rank_layers(store: Path, labels: list[str], k: int) -> dict[str, LayerRanking]:
    """Rank every layer in ``labels`` with one ``dask.compute`` over all of them."""
    tasks = {}
    for label in labels:
        maxes = da.from_zarr(str(store), component=f"{label}/max").rechunk({1: -1})
        offsets = np.concatenate([[0], np.cumsum(maxes.chunks[0])[:-1]])
        blocks = maxes.to_delayed().ravel()
        partials = [dask.delayed(block_partial)(block, int(offset), k)
                    for block, offset in zip(blocks, offsets, strict=True)]
        tasks[label] = dask.delayed(merge_partials)(partials, k)
    (results,) = dask.compute(tasks)
    return results
