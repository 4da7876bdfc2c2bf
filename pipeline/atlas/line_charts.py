"""Inline SVG line charts (the invariance page's curves), computed here so the template only
writes elements: positions in a fixed viewBox, ticks as text. The SVG scales with its
container; colours come from the stylesheet, so both themes apply."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 320, 210  # viewBox
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 10, 40  # margins: tick labels left and below, axis title


@dataclass(frozen=True)
class Tick:
    at: float  # viewBox coordinate along its axis
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str  # a tooltip: what the point is, in words


@dataclass(frozen=True)
class Line:
    name: str
    index: int  # picks the series' colour and dash (the stylesheet's .inv-s<index % 8>)
    points: tuple[Point, ...]

    @property
    def path(self) -> str:
        """The SVG polyline's ``points``."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class LineChart:
    title: str
    x_label: str
    y_label: str
    lines: tuple[Line, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: float = LEFT
    right: float = WIDTH - RIGHT
    top: float = TOP
    bottom: float = HEIGHT - BOTTOM


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) covering [low, high], about
    ``count`` of them, all inside the range."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(f * power for f in (1, 2, 5, 10) if f * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten that is at least
    ``value`` (> 0): the top of an axis."""
    power = 10 ** math.floor(math.log10(value))
    return next(f * power for f in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
                if f * power >= value * (1 - 1e-12))


def tick_label(value: float) -> str:
    """A tick's text: integers without decimals, others with at most 3 significant digits."""
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):d}"
    return f"{value:.3g}"


def line_chart(title: str, x_label: str, y_label: str,
               lines: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[str]]],
               y_low: float = 0.0, y_high: float | None = None,
               x_ticks: Sequence[float] | None = None) -> LineChart:
    """A chart of ``lines`` (name, xs, ys, a tooltip per point) on shared axes: x over the data's
    range, y from ``y_low`` to ``y_high`` (default: the largest value, rounded up to a tick)."""
    xs = [x for _, line_xs, _, _ in lines for x in line_xs]
    ys = [y for _, _, line_ys, _ in lines for y in line_ys if math.isfinite(y)]
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_high <= x_low:
        x_high = x_low + 1.0
    if y_high is None:
        top = max(ys, default=0.0)
        y_high = nice_ceiling(top) if top > y_low else y_low + 1.0
    left, right, plot_top, plot_bottom = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM

    def x_at(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def y_at(y: float) -> float:
        y = min(max(y, y_low), y_high)
        return plot_bottom - (y - y_low) / (y_high - y_low) * (plot_bottom - plot_top)

    drawn = tuple(
        Line(name, index, tuple(Point(x_at(x), y_at(y), tip)
                                for x, y, tip in zip(line_xs, line_ys, tips, strict=True)
                                if math.isfinite(y)))
        for index, (name, line_xs, line_ys, tips) in enumerate(lines))
    x_values = list(x_ticks) if x_ticks is not None else nice_ticks(x_low, x_high)
    return LineChart(
        title, x_label, y_label, drawn,
        tuple(Tick(x_at(v), tick_label(v)) for v in x_values if x_low <= v <= x_high),
        tuple(Tick(y_at(v), tick_label(v)) for v in nice_ticks(y_low, y_high, 5)))
