"""Ranking a bfloat16 store by float32 values: each unit's top candidates measured again.

With ``[activations] bf16`` the store's maxima come from bfloat16 maps: ties are frequent
(8 bits of mantissa) and a value can be off the float32 map's peak by about 0.4 %, so the
images ranked, their values and their positions need not be what the deconv stage finds when
it computes the same maps in float32. Rank therefore measures each unit's leading candidates
again in float32 (one forward pass per distinct candidate image, all layers at once) and
orders them by those values, ties to the lower image id as everywhere in ranking.

The candidates of a unit are the first rows of its bfloat16 ordering: its top ``k``, and every
row within ``MARGIN`` (relative) of its ``k``-th value, up to the ``m`` rows the partial keeps
(positive ones only where the ``k``-th is not: rank keeps no other). The float32 top ``k`` is
exact when no image outside them overtakes the candidates in float32, which needs a bfloat16
error above the margin, eight times the error bfloat16 was measured to make; a unit where the
margin cannot tell (its float32 ``k``-th value is within the margin of the first image left out,
or its candidates fill all ``m`` rows) is counted, and rank says how many. The rows past a
unit's candidates keep their bfloat16 values and order, so the partial is no longer best-first
there; statistics over all images (mean, quantiles, histograms, the selectivity of the top
100) stay bfloat16's. The re-check costs a float32 forward pass of the distinct candidate
images: about ``k`` per unit, fewer where units share top images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from pipeline.ranking.partials import Partial

#: a candidate's bfloat16 value may be this far (relative) below the unit's k-th
MARGIN = 1 / 32

#: what a float32 measurement of some images gives per layer: (max, argmax), each ``[n, C]``
Measure = Callable[[np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Rechecked:
    """A layer's partial reordered by float32 values in each unit's candidate prefix, the
    float32 position (flattened ``y * width + x``) of its first ``k`` rows, ``[k, C]``, and how
    many of its units the margin cannot vouch for (see the module doc)."""

    partial: Partial
    argmax: np.ndarray
    uncertain: int = 0


def candidate_rows(values: np.ndarray, k: int) -> np.ndarray:
    """How many leading rows of each unit's ordering (``values [m, C]``, best first, -inf
    padding) are candidates: its top ``k``, and all within ``MARGIN`` of the ``k``-th; only
    positive ones where the ``k``-th is not positive."""
    m = values.shape[0]
    if m == 0:
        return np.zeros(values.shape[1], np.int64)
    kth = values[min(k, m) - 1]
    threshold = kth - MARGIN * np.abs(kth)
    near = np.count_nonzero(values >= threshold[None, :], axis=0)  # a prefix: sorted
    rows = np.minimum(np.maximum(near, min(k, m)), np.count_nonzero(values > -np.inf, axis=0))
    positive = np.count_nonzero(values > 0, axis=0)
    return np.where(kth > 0, rows, np.minimum(rows, positive)).astype(np.int64)


def candidate_images(partials: dict[str, Partial], k: int) -> np.ndarray:
    """The distinct image ids that are a candidate of some unit of some layer."""
    chosen = [part.ids[:rows, unit]
              for part in partials.values()
              for unit, rows in enumerate(candidate_rows(part.values, k)) if rows]
    return np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def recheck(partials: dict[str, Partial], k: int, measure: Measure) -> dict[str, Rechecked]:
    """Every layer's partial with each unit's candidates ordered by their float32 maxima
    (``measure(ids)``, NaN for an image that cannot be read), and their positions."""
    ids = candidate_images(partials, k)
    measured = measure(ids)
    out = {}
    for label, part in partials.items():
        maxima, where = measured[label]
        values, order_ids = part.values.copy(), part.ids.copy()
        m = len(values)
        argmax = np.zeros((min(k, m), values.shape[1]), np.int64)
        uncertain = 0
        for unit, rows in enumerate(candidate_rows(part.values, k)):
            if not rows:
                continue
            image = part.ids[:rows, unit]
            at = np.searchsorted(ids, image)
            exact = maxima[at, unit].astype(np.float32)
            exact = np.where(np.isnan(exact), np.float32(-np.inf), exact)
            order = np.lexsort((image, -exact))
            values[:rows, unit], order_ids[:rows, unit] = exact[order], image[order]
            top = order[:len(argmax)]
            argmax[:len(top), unit] = where[at[top], unit]
            kth = values[min(k, rows) - 1, unit]
            if rows < m:  # the best left out, by its bfloat16 value, could it overtake?
                uncertain += bool(part.values[rows, unit] > 0 and
                                  kth < part.values[rows, unit] * (1 + MARGIN))
            else:  # every row kept is a candidate: ties may go on past them
                uncertain += bool(part.values[m - 1, unit] >= kth * (1 - MARGIN) > 0)
        out[label] = Rechecked(replace(part, values=values, ids=order_ids), argmax, uncertain)
    return out
