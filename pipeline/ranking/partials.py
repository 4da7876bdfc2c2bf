"""What one block of images contributes to a layer's ranking, and how blocks merge.

Every reduction is mergeable, so blocks are reduced independently and combined in a tree:
the top-m candidates per unit (ordered by value descending, then image id ascending, so ties go
to the lower image id whatever the chunking), sums for the mean and std, the count of images where
the unit fires, and a log-spaced histogram for the quantiles. Unreadable (NaN) images count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.ranking.histogram import block_histogram


@dataclass
class Partial:
    """A mergeable summary of some images of one layer (``C`` units, ``m`` candidates)."""

    values: np.ndarray  # [<=m, C] float32, best first; -inf pads missing candidates
    ids: np.ndarray  # [<=m, C] int64 image ids of ``values``
    count: int  # readable images summarised
    total: np.ndarray  # [C] float64 sum of per-image maxima
    total_sq: np.ndarray  # [C] float64 sum of their squares
    active: np.ndarray  # [C] int64 images where the unit fires (max > 0)
    histogram: np.ndarray  # [C, N_BINS] int32 (N < 2**31 images)


def block_partial(values: np.ndarray, offset: int, m: int) -> Partial:
    """Summarise the block ``values [rows, C]`` whose first row is image ``offset``.

    Written to keep temporaries few (a block is tens of MB): no copies when every image is
    readable, and float64 sums accumulated over slices rather than on a float64 copy.
    """
    values = np.asarray(values, dtype=np.float32)
    missing = np.isnan(values)
    if not missing.any():
        ranked = good = values
    else:
        # An unreadable image is NaN in every unit and counts nowhere; a stray NaN in one unit
        # (a numeric accident) counts as "did not fire" there, so one cell never drops an image.
        readable = ~missing.all(axis=1)
        ranked = np.where(missing, np.float32(-np.inf), values)
        good = values[readable]
        if missing[readable].any():
            good = np.where(np.isnan(good), np.float32(0), good)
    top_values, top_rows = top_candidates(ranked, m)
    total, total_sq = _sums(good)
    return Partial(
        values=top_values, ids=top_rows + offset, count=len(good), total=total,
        total_sq=total_sq, active=np.count_nonzero(good > 0, axis=0).astype(np.int64),
        histogram=block_histogram(good),
    )


def _sums(values: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Sum and sum of squares per column in float64, a slice of ``rows`` at a time."""
    total = np.zeros(values.shape[1])
    total_sq = np.zeros(values.shape[1])
    for start in range(0, len(values), rows):
        part = values[start:start + rows].astype(np.float64)
        total += part.sum(axis=0)
        total_sq += np.square(part, out=part).sum(axis=0)
    return total, total_sq


def top_candidates(ranked: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` best rows of every column: (values, row indices) sorted by value descending,
    then row ascending. ``argpartition`` finds the m-th value in linear time; all rows above it,
    plus the lowest-numbered rows equal to it, are the candidates, so ties are exact."""
    rows, channels = ranked.shape
    if rows <= m:
        order = np.lexsort((np.broadcast_to(np.arange(rows)[:, None], ranked.shape), -ranked),
                           axis=0)
        return np.take_along_axis(ranked, order, axis=0), order.astype(np.int64)
    columns = np.ascontiguousarray(ranked.T)  # [C, rows]: partition along contiguous memory
    threshold = np.partition(columns, rows - m, axis=1)[:, rows - m:rows - m + 1]
    above = columns > threshold
    equal = columns == threshold
    need = m - np.count_nonzero(above, axis=1)[:, None]
    chosen = above | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= need))
    _, chosen_rows = np.nonzero(chosen)  # row-major: m rows per unit, rows ascending
    row_index = chosen_rows.reshape(channels, m)
    picked = np.take_along_axis(columns, row_index, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")  # stable: equal values keep row order
    values = np.take_along_axis(picked, order, axis=1).T
    return np.ascontiguousarray(values), np.take_along_axis(row_index, order, axis=1).T.copy()


def merge(partials: list[Partial], m: int) -> Partial:
    """Combine partials of disjoint images into one (the same for any grouping)."""
    values = np.concatenate([part.values for part in partials])
    ids = np.concatenate([part.ids for part in partials])
    order = np.lexsort((ids, -values), axis=0)[:m]
    return Partial(
        values=np.take_along_axis(values, order, axis=0),
        ids=np.take_along_axis(ids, order, axis=0),
        count=sum(part.count for part in partials),
        total=np.sum([part.total for part in partials], axis=0),
        total_sq=np.sum([part.total_sq for part in partials], axis=0),
        active=np.sum([part.active for part in partials], axis=0),
        histogram=_add([part.histogram for part in partials]),
    )


def _add(arrays: list[np.ndarray]) -> np.ndarray:
    """Sum without stacking: histograms of wide layers are tens of MB each."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total
