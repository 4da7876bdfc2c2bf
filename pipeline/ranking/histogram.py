"""Log-spaced histograms of per-image maxima, and the quantiles read from them.

Exact quantiles over 1.28 M images would need every value in memory (or a second pass); a
histogram is one pass, needs memory independent of N, and merges exactly (counts add), so the
quantiles are identical for any chunking. Bins follow the float's own layout: one bin per power of
two split into ``2**MANTISSA_BITS`` equal steps, so every bin is at most 1/32 (3.1 %) of its value
wide at any scale, from 2**-20 to 2**20; smaller magnitudes count as zero, larger ones fall in the
outermost bin. Within a bin the quantile is interpolated linearly.
"""

from __future__ import annotations

import numpy as np

MANTISSA_BITS = 5
EXP_MIN, EXP_MAX = -20, 20  # magnitudes in [2**EXP_MIN, 2**EXP_MAX) get their own bins
STEPS = 1 << MANTISSA_BITS
N_MAGNITUDES = (EXP_MAX - EXP_MIN) * STEPS
N_BINS = 2 * N_MAGNITUDES + 1  # negatives (largest magnitude first), zero, positives
ZERO_BIN = N_MAGNITUDES


def bin_index(values: np.ndarray) -> np.ndarray:
    """The bin of every float32 value (NaN must be removed first).

    A float32's biased exponent and top mantissa bits are adjacent, so ``bits >> (23 - m)`` is
    already the log-spaced magnitude index; the sign bit picks the side of the zero bin.
    """
    raw = np.ascontiguousarray(values, dtype=np.float32).view(np.int32)
    index = raw & 0x7FFFFFFF
    index >>= 23 - MANTISSA_BITS
    index -= (127 + EXP_MIN) * STEPS - 1  # magnitude + 1; <= 0 below 2**EXP_MIN
    np.clip(index, 0, N_MAGNITUDES, out=index)
    sign = raw >> 31  # -1 for negative values, 0 otherwise
    sign |= 1
    index *= sign
    index += ZERO_BIN
    return index


def block_histogram(values: np.ndarray) -> np.ndarray:
    """Counts ``[C, N_BINS]`` of a ``[rows, C]`` block (without NaN)."""
    channels = values.shape[1]
    flat = bin_index(values)
    flat += (np.arange(channels, dtype=np.int32) * N_BINS)[None, :]
    counts = np.bincount(flat.ravel(), minlength=channels * N_BINS)
    return counts.reshape(channels, N_BINS).astype(np.int32)


def bin_edges() -> np.ndarray:
    """The ``N_BINS + 1`` value edges of the bins (the zero bin spans ±2**EXP_MIN)."""
    steps = np.arange(N_MAGNITUDES) % STEPS
    exponents = EXP_MIN + np.arange(N_MAGNITUDES) // STEPS
    lower = np.ldexp(1.0 + steps / STEPS, exponents)  # lower edge of each positive magnitude
    positive = np.concatenate([lower, [2.0 ** EXP_MAX]])
    return np.concatenate([-positive[::-1], positive])


def quantiles(counts: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Quantiles ``[len(levels), C]`` of histograms ``[C, N_BINS]`` (NaN where a row is empty).

    The q-quantile is the value below which a fraction q of the images lies, interpolated
    linearly inside the bin where the cumulative count crosses ``q * n``; the zero bin reads 0.
    """
    edges = bin_edges()
    cumulative = np.cumsum(counts, axis=1)
    total = cumulative[:, -1]
    out = np.full((len(levels), len(counts)), np.nan)
    for row, level in enumerate(levels):
        target = level * total
        index = np.minimum((cumulative < target[:, None]).sum(axis=1), N_BINS - 1)
        units = np.arange(len(counts))
        before = np.where(index > 0, cumulative[units, np.maximum(index - 1, 0)], 0)
        inside = np.maximum(counts[units, index], 1)
        fraction = np.clip((target - before) / inside, 0.0, 1.0)
        low, high = edges[index], edges[index + 1]
        value = np.where(index == ZERO_BIN, 0.0, low + fraction * (high - low))
        out[row] = np.where(total > 0, value, np.nan)
    return out
