"""Pixels of the occlusion pages (Figure 7): maps coloured for drawing over the image.

Only numpy and PIL. A map has one pixel per occluder position; the page stretches it over the
image (one ``stride`` block per pixel, drawn crisp), so no resampling here invents values
between positions. Continuous maps ((b) total activation, (d) probability) use a viridis-like
ramp from ``low`` (dark violet) to ``high`` (yellow): light and dark alike, and readable in
grey. The class map (e) gives the true class the first colour of ``CLASS_COLOURS`` and the other
classes the next ones by how many positions they win; classes beyond the palette share
``OTHER_COLOUR``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.atlas.tiles import BACKGROUND, GUTTER

#: viridis at 0, 1/4, 1/2, 3/4, 1 (linear in between); the page's colour bars use the same stops
RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
#: Tableau 10 without its grey: distinct hues, none of them the ramp's
CLASS_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f")
OTHER_COLOUR = "#bab0ac"
# Opacity of a map over its image (the page and the index card use the same values): the
# continuous maps let the image show through; the class map hides more of it, so its colours
# stay those of its legend.
OVERLAY_OPACITY = 0.7
CLASS_OPACITY = 0.85


def _rgb(colour: str) -> tuple[int, int, int]:
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return red, green, blue


def ramp_rgb(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 ``[..., 3]``: ``values`` on the ramp, ``low`` -> first stop, ``high`` -> last
    (clipped; a flat range shows the middle colour)."""
    v = np.nan_to_num(np.asarray(values, np.float64), nan=low)
    if high > low:
        v = np.clip((v - low) / (high - low), 0.0, 1.0)
    else:
        v = np.full(v.shape, 0.5)
    stops = np.array([_rgb(colour) for colour in RAMP], np.float64)
    position = v * (len(stops) - 1)
    lower = np.minimum(position.astype(int), len(stops) - 2)
    fraction = (position - lower)[..., None]
    colours = stops[lower] * (1 - fraction) + stops[lower + 1] * fraction
    return np.rint(colours).astype(np.uint8)


def ramp_css() -> str:
    """The ramp as a CSS gradient, left to right, for the colour bars."""
    return f"linear-gradient(to right, {', '.join(RAMP)})"


@dataclass(frozen=True)
class ClassColour:
    """One entry of the class map's legend."""

    label: int  # -1: the classes beyond the palette, together
    colour: str
    positions: int  # how many occluder positions it wins
    share: float


def class_colours(predicted: np.ndarray, true_label: int) -> tuple[ClassColour, ...]:
    """Legend of a class map: the true class first (even when it wins nowhere), then the other
    winners by positions won; the tail beyond the palette as one entry with label -1."""
    labels, counts = np.unique(np.asarray(predicted).ravel(), return_counts=True)
    won = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    total = max(1, int(np.asarray(predicted).size))
    others = sorted((label for label in won if label != true_label),
                    key=lambda label: (-won[label], label))
    entries = [ClassColour(true_label, CLASS_COLOURS[0], won.get(true_label, 0),
                           won.get(true_label, 0) / total)]
    for i, label in enumerate(others[:len(CLASS_COLOURS) - 1], start=1):
        entries.append(ClassColour(label, CLASS_COLOURS[i], won[label], won[label] / total))
    rest = sum(won[label] for label in others[len(CLASS_COLOURS) - 1:])
    if rest:
        entries.append(ClassColour(-1, OTHER_COLOUR, rest, rest / total))
    return tuple(entries)


def class_rgb(predicted: np.ndarray, legend: tuple[ClassColour, ...]) -> np.ndarray:
    """uint8 ``[rows, columns, 3]``: each position in its winning class's legend colour."""
    predicted = np.asarray(predicted)
    out = np.empty((*predicted.shape, 3), np.uint8)
    out[:] = _rgb(OTHER_COLOUR)
    for entry in legend:
        if entry.label >= 0:
            out[predicted == entry.label] = _rgb(entry.colour)
    return out


def over_image(image: np.ndarray, map_rgb: np.ndarray, stride: int,
               opacity: float = OVERLAY_OPACITY) -> np.ndarray:
    """uint8 ``[H, W, 3]``: the map stretched to one ``stride`` block per position, cropped to
    the image, and blended over it as the page draws it."""
    h, w = image.shape[:2]
    blocks = map_rgb.repeat(stride, axis=0).repeat(stride, axis=1)[:h, :w]
    mixed = (1 - opacity) * image.astype(np.float64) + opacity * blocks
    return np.rint(mixed).astype(np.uint8)


def card_image(panels: list[np.ndarray], side: int = 128) -> Image.Image:
    """The index card's picture: panels ``[H, W, 3]`` side by side, each at most ``side`` px
    high, ``GUTTER`` px apart."""
    cells = []
    for panel in panels:
        cell = Image.fromarray(panel, "RGB")
        if cell.height > side:
            cell = cell.resize((round(cell.width * side / cell.height), side),
                               Image.Resampling.BOX)
        cells.append(cell)
    width = sum(cell.width for cell in cells) + GUTTER * (len(cells) - 1)
    sheet = Image.new("RGB", (width, max(cell.height for cell in cells)), BACKGROUND)
    x = 0
    for cell in cells:
        sheet.paste(cell, (x, 0))
        x += cell.width + GUTTER
    return sheet
