"""A deterministic synthetic image data set, so the demo runs offline in a couple of minutes.

The classes are chosen so that a small CNN has to learn the kinds of filters Zeiler & Fergus
show in their atlas: colour (``red_disc`` vs ``blue_disc`` differ only in hue), oriented edges
(four stripe orientations), corners and shape parts (corner, cross, triangle, ring). Every
image has random position, scale, rotation jitter, a tinted gradient background, low-contrast
clutter and pixel noise, so no single pixel statistic gives the class away.

Each image draws from its own ``numpy`` generator seeded by ``(seed, split, class, index)``:
the files are byte-identical for the same arguments and do not depend on generation order.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.errors import UserError
from pipeline.progress import progress

CLASS_NAMES: tuple[str, ...] = (
    "red_disc",
    "blue_disc",
    "ring",
    "triangle",
    "cross",
    "corner",
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "antidiagonal_stripes",
)

#: The classes whose label a transform of the invariance experiment (Figure 5) can change: the
#: four stripe classes *are* their orientation, so a stripe image rotated by 90 degrees rightly
#: becomes another class, and measuring its "rotation invariance" would call a correct answer a
#: failure. The invariance stage leaves these classes out of that transform's sample (see
#: ``pipeline.experiments.invariance_sampling``). No class here is defined by its size or place.
LABEL_CHANGED_BY: dict[str, tuple[str, ...]] = {
    "horizontal_stripes": ("rotation",),
    "vertical_stripes": ("rotation",),
    "diagonal_stripes": ("rotation",),
    "antidiagonal_stripes": ("rotation",),
}

SPLITS: tuple[str, ...] = ("train", "val")
SUPERSAMPLE = 2  # masks are drawn at 2x and box-filtered down: cheap anti-aliasing
MIN_IMAGE_SIZE = 32

Mask = Callable[[np.random.Generator, int], Image.Image]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _foreground_colour(rng: np.random.Generator, class_name: str) -> np.ndarray:
    """Saturated, bright colour; hue is the class only for the two disc classes."""
    if class_name == "red_disc":
        hue = rng.uniform(-0.03, 0.03)
    elif class_name == "blue_disc":
        hue = rng.uniform(0.60, 0.67)
    else:
        hue = rng.uniform(0.0, 1.0)
    return _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dark, weakly saturated base colour with a linear gradient in a random direction."""
    base = _hsv(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.5))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    grad = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    tint = rng.uniform(-25.0, 25.0, size=3).astype(np.float32)
    return base[None, None, :] + grad[:, :, None] * tint[None, None, :]


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Blend a few small dots and thin short lines of random colour into ``img`` in place."""
    size = img.shape[0]
    big = size * SUPERSAMPLE
    for _ in range(int(rng.integers(3, 8))):
        mask = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(mask)
        x, y = rng.uniform(0, big, size=2)
        if rng.uniform() < 0.5:
            r = rng.uniform(0.02, 0.05) * big
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        else:
            length, angle = rng.uniform(0.05, 0.15) * big, rng.uniform(0.0, np.pi)
            dx, dy = length * np.cos(angle), length * np.sin(angle)
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=255, width=SUPERSAMPLE)
        alpha = _downsample(mask) * rng.uniform(0.3, 0.6)
        colour = _hsv(rng.uniform(), rng.uniform(0.0, 0.8), rng.uniform(0.2, 0.8))
        img *= 1.0 - alpha[:, :, None]
        img += alpha[:, :, None] * colour[None, None, :]


def _downsample(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


def _rotated(points: np.ndarray, angle: float, centre: np.ndarray) -> list[tuple[float, float]]:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return [tuple(p) for p in (points @ rot.T + centre)]


def _placement(rng: np.random.Generator, big: int) -> tuple[np.ndarray, float]:
    """Random centre and radius; the shape stays (mostly) inside the frame."""
    r = rng.uniform(0.2, 0.34) * big
    margin = 0.9 * r
    centre = rng.uniform(margin, big - margin, size=2)
    return centre, r


def _disc(rng: np.random.Generator, big: int) -> Image.Image:
    centre, r = _placement(rng, big)
    rx, ry = r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).ellipse((centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry),
                                 fill=255)
    return mask


def _ring(rng: np.random.Generator, big: int) -> Image.Image:
    centre, r = _placement(rng, big)
    inner = r * rng.uniform(0.5, 0.7)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r), fill=255)
    draw.ellipse((centre[0] - inner, centre[1] - inner, centre[0] + inner, centre[1] + inner),
                 fill=0)
    return mask


def _triangle(rng: np.random.Generator, big: int) -> Image.Image:
    centre, r = _placement(rng, big)
    angles = np.array([0.0, 2.0 * np.pi / 3.0, 4.0 * np.pi / 3.0])
    pts = np.stack([np.cos(angles), np.sin(angles)], axis=1) * r * 1.1
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(_rotated(pts, rng.uniform(0, 2 * np.pi), centre), fill=255)
    return mask


def _bars(rng: np.random.Generator, big: int, corner: bool) -> Image.Image:
    """Two perpendicular bars: meeting at their ends (corner) or their middles (cross)."""
    centre, r = _placement(rng, big)
    w = r * rng.uniform(0.28, 0.42)
    if corner:
        # L-shape of arm length ~1.7r, centred on its bounding box, any orientation.
        a = 1.7 * r
        pts = np.array([[0, 0], [a, 0], [a, w], [w, w], [w, a], [0, a]]) - a / 2.0
        angle = rng.uniform(0, 2 * np.pi)
    else:
        pts = np.array([[-r, -w / 2], [-w / 2, -w / 2], [-w / 2, -r], [w / 2, -r], [w / 2, -w / 2],
                        [r, -w / 2], [r, w / 2], [w / 2, w / 2], [w / 2, r], [-w / 2, r],
                        [-w / 2, w / 2], [-r, w / 2]])
        angle = np.deg2rad(rng.uniform(-15.0, 15.0))  # stays a "+", never an "x"
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(_rotated(pts, angle, centre), fill=255)
    return mask


def _stripes(rng: np.random.Generator, big: int, degrees: float) -> Image.Image:
    """Stripes of one orientation (+-10 degrees jitter) inside a round patch."""
    centre, r = _placement(rng, big)
    r *= 1.15
    theta = np.deg2rad(degrees + rng.uniform(-10.0, 10.0))
    period = rng.uniform(0.09, 0.14) * big
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) + 0.5
    # Distance along the stripe normal; image y points down, so negate it for "/" to rise.
    normal = -np.sin(theta) * (xx - centre[0]) - np.cos(theta) * (yy - centre[1])
    on = np.mod(normal / period + rng.uniform(), 1.0) < 0.5
    inside = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= r * r
    return Image.fromarray(((on & inside) * 255).astype(np.uint8))


_SHAPES: dict[str, Mask] = {
    "red_disc": _disc,
    "blue_disc": _disc,
    "ring": _ring,
    "triangle": _triangle,
    "cross": lambda rng, big: _bars(rng, big, corner=False),
    "corner": lambda rng, big: _bars(rng, big, corner=True),
    "horizontal_stripes": lambda rng, big: _stripes(rng, big, 0.0),
    "vertical_stripes": lambda rng, big: _stripes(rng, big, 90.0),
    "diagonal_stripes": lambda rng, big: _stripes(rng, big, 45.0),
    "antidiagonal_stripes": lambda rng, big: _stripes(rng, big, 135.0),
}


def render_image(class_name: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``image_size`` x ``image_size`` RGB uint8 image of ``class_name``."""
    img = _background(rng, image_size)
    _clutter(rng, img)
    alpha = _downsample(_SHAPES[class_name](rng, image_size * SUPERSAMPLE))
    colour = _foreground_colour(rng, class_name)
    img = img * (1.0 - alpha[:, :, None]) + alpha[:, :, None] * colour[None, None, :]
    img += rng.normal(0.0, 8.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def image_rng(seed: int, split: str, class_index: int, index: int) -> np.random.Generator:
    """The generator of one image, so each file is independent of generation order."""
    return np.random.default_rng([seed, SPLITS.index(split), class_index, index])


def check_settings(image_size: int, train_per_class: int, val_per_class: int, seed: int) -> None:
    """Refuse settings the generator cannot honour, before anything is written."""
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"synthetic data: image_size={image_size} is too small; "
                        f"use at least {MIN_IMAGE_SIZE}")
    if train_per_class < 1 or val_per_class < 1:
        raise UserError(f"synthetic data: train_per_class={train_per_class} and "
                        f"val_per_class={val_per_class} must both be at least 1")
    if seed < 0:
        raise UserError(f"synthetic data: seed={seed} must be a non-negative integer")


def generate_synthetic_dataset(
    root: Path, *, image_size: int, train_per_class: int, val_per_class: int, seed: int
) -> None:
    """Write ``root/{train,val}/<class>/<class>_<index:05d>.png`` for every class in CLASS_NAMES.

    Same arguments give byte-identical files (PNG without timestamps, per-image seeds).
    """
    check_settings(image_size, train_per_class, val_per_class, seed)
    root = Path(root)
    counts = {"train": train_per_class, "val": val_per_class}
    jobs = [(split, ci, i) for split in SPLITS for ci in range(len(CLASS_NAMES))
            for i in range(counts[split])]
    for split in SPLITS:
        for name in CLASS_NAMES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
    for split, ci, i in progress(jobs, desc="synthetic images", total=len(jobs), unit="img"):
        name = CLASS_NAMES[ci]
        pixels = render_image(name, image_size, image_rng(seed, split, ci, i))
        path = root / split / name / f"{name}_{i:05d}.png"
        Image.fromarray(pixels).save(path, format="PNG")
