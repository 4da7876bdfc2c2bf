"""Transformation robustness: every step sees each image slightly moved, scaled and turned.

An image that drives a unit only at one exact pixel alignment is an adversarial pattern, not
a feature. Lucid's ``standard_transforms`` (pad 12 px with grey, jitter 8 px, scale by one of
0.90 ... 1.10, rotate by -10 ... 10 degrees with extra weight on 0, jitter 4 px) make the image
work under all of them. Here the same family is one random similarity transform per image
and step, applied with one ``grid_sample`` for the whole batch: a translation of up to
``JITTER`` px (Lucid's 8 + 4), a scale and a rotation drawn from Lucid's lists, and mid grey
(Lucid's padding value) wherever the moved image does not cover the canvas. Pixel amounts are
Lucid's at 224 px and scale with the image's side (a 51 px receptive-field input moves by
3 px, not 12).

The random numbers come from one CPU generator per image, so a GPU run sees the same
transforms as a CPU run, and an image's transforms do not depend on the rest of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

JITTER = 12  # px at 224 px: Lucid's jitter(8) then jitter(4)
SCALES = tuple(1 + (i - 5) / 50 for i in range(11))  # Lucid's random_scale
ANGLES = tuple(range(-10, 11)) + (0,) * 5  # Lucid's random_rotate, degrees
GREY = 0.5  # Lucid's padding value
REFERENCE_SIDE = 224


def jitter_shift(side: int) -> int:
    """The largest shift, in px, of an image of ``side`` px (Lucid's 12 at 224 px)."""
    return max(1, round(JITTER * side / REFERENCE_SIDE))


def random_similarity(images: torch.Tensor,
                      generators: Sequence[torch.Generator]) -> torch.Tensor:
    """``images`` ``[n, c, s, s]`` each moved, scaled and rotated at random (same shape), image
    ``i`` by draws of ``generators[i]``."""
    _, _, side, _ = images.shape
    shift = jitter_shift(side)
    draws = torch.stack([torch.rand(4, generator=generator) for generator in generators])
    scale = torch.tensor(SCALES)[(draws[:, 0] * len(SCALES)).long().clamp(max=len(SCALES) - 1)]
    angle = torch.tensor(ANGLES, dtype=torch.float32)[
        (draws[:, 1] * len(ANGLES)).long().clamp(max=len(ANGLES) - 1)] * (math.pi / 180)
    # integer pixel shifts in [-shift, shift], as Lucid's jitter crops whole pixels
    offset = (draws[:, 2:] * (2 * shift + 1)).floor().clamp(max=2 * shift) - shift
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 1] * 2 / side], dim=1),
                         torch.stack([sin, cos, offset[:, 0] * 2 / side], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    moved = F.grid_sample(images - GREY, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return moved + GREY
