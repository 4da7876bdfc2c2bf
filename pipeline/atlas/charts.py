"""Inline SVG charts of a unit page, computed here so the templates only draw rectangles.

Both charts are plain data (positions in a fixed viewBox); the template writes them as SVG
elements, so labels (class names) are escaped like any other text.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 320, 120  # viewBox of the histogram; the bars leave room for the axis labels
PLOT_TOP, PLOT_BOTTOM = 8, 100
BINS = 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str


@dataclass(frozen=True)
class Histogram:
    bars: tuple[Bar, ...]
    low: float
    high: float
    n_zero: int
    n_total: int


def histogram_chart(bins: tuple[tuple[float, float, int], ...], n_zero: int) -> Histogram | None:
    """Rebin the stored log-spaced bins of non-zero per-image maxima into ``BINS`` equal bins
    from their lowest to their highest edge (each stored bin goes where its middle falls)."""
    if not bins:
        return None
    low = min(lo for lo, _, _ in bins)
    low = min(low, 0.0)
    high = max(hi for _, hi, _ in bins)
    width = (high - low) / BINS or 1.0
    counts = [0] * BINS
    for lo, hi, count in bins:
        counts[min(BINS - 1, int(((lo + hi) / 2 - low) / width))] += count
    tallest = max(counts) or 1
    step = WIDTH / BINS
    bars = tuple(
        Bar(x=i * step + 0.5, y=PLOT_BOTTOM - (PLOT_BOTTOM - PLOT_TOP) * count / tallest,
            w=step - 1, h=(PLOT_BOTTOM - PLOT_TOP) * count / tallest,
            title=f"{low + i * width:.2g}–{low + (i + 1) * width:.2g}: {count}")
        for i, count in enumerate(counts) if count)
    return Histogram(bars, low, high, n_zero, n_zero + sum(counts))


@dataclass(frozen=True)
class ClassRow:
    name: str
    count: int
    share: float  # of the images counted
    width: float  # bar length in % of the chart


def class_chart(classes: tuple[tuple[int, str, int], ...], total: int,
                shown: int = 10) -> tuple[ClassRow, ...]:
    """The ``shown`` most frequent classes of a unit's top images as bar rows."""
    if not classes or total <= 0:
        return ()
    top = classes[:shown]
    most = max(count for _, _, count in top)
    return tuple(ClassRow(name, count, count / total, 100 * count / most)
                 for _, name, count in top)
