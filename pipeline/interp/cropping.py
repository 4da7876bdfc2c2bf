"""Exact back-projection on a crop of the input around the unit's receptive field.

Why: a full-image backward per projection costs the same for a unit that sees 11 pixels as for
one that sees the whole image. A unit's projection is zero outside its receptive-field box, and
the unit's value and every activation in its backward cone (the units it is computed from,
recursively) depend only on input pixels inside that box. Projecting the unit on a crop that
contains the box therefore gives the same projection, pasted back at the crop's offset.

The crop rule, per dimension, for a layer with field `size`, `jump` J and unit box [b0, b1):
- The crop starts at o, a multiple of J (so a multiple of every intermediate layer's jump, which
  all divide J): every intermediate grid of the crop is the original grid shifted by a whole
  number of units, and the unit sits at position y - o / J of the cropped map.
- Interior units: crop [o, o + W) with o = (max(b0, 0) // J) * J and the fixed extent
  W = size + J - 1 >= b1 - o, so all interior crops of a layer share one shape and batch.
- Units whose window would pass the image end: crop [o', H) with o' = max(0, (H - W) // J * J),
  the largest aligned start that keeps the extent >= W (one second shape per dimension). Ending
  at the true image edge is exact because the output-size floor formulas commute with an
  aligned offset: floor((n - s*m + 2p - k) / s) + 1 = floor((n + 2p - k) / s) + 1 - m.
- A crop edge that is also an image edge (o = 0 or end = H) pads exactly like the original. At
  an interior crop edge the zero padding corrupts units near the edge, but those lie outside the
  cone: every cone member's field lies inside the unit's box, which lies inside the crop.

This holds for networks of spatially local ops (conv, pooling, elementwise ops, merges of such
branches). It fails for anything that mixes information across the whole map (global or
adaptive pooling feeding a broadcast as in squeeze-excitation, attention, interpolation,
normalisation over space, position-dependent terms). Rather than trusting an op list, the
projector verifies each (layer, input size) once (`agree` on probes from `probe_positions`) and
projects on the full image whenever the check fails or the receptive field is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.interp.receptive_field import Box, ReceptiveField

# Crops are used only when their mean area is below this fraction of the image's: a crop's
# forward and backward are both proportional to its area, while the full-image path shares one
# forward between the requests on the same image, so nearly full-size crops do not pay.
MAX_AREA_FRACTION = 0.8

# Self-check tolerance: max |cropped - full| <= TOLERANCE * max |full|.
TOLERANCE = 1e-5


def crop_span(start: int, size: int, jump: int, n: int) -> tuple[int, int]:
    """[o, e) of the input along one dimension of length n for a unit box [start, start+size)."""
    window = size + jump - 1
    if window >= n:
        return 0, n
    o = (max(start, 0) // jump) * jump
    if o + window <= n:
        return o, o + window
    return max(0, (n - window) // jump * jump), n


@dataclass(frozen=True)
class CropPlan:
    """Crops of one layer at one input size: the layer's field, the image's (H, W) and the
    layer's full-image output shape (C, h, w), against which requests are validated."""

    field: ReceptiveField
    image_hw: tuple[int, int]
    fmap_shape: tuple[int, ...]

    def box(self, y: int, x: int) -> Box:
        """(top, left, bottom_excl, right_excl) of the crop that projects unit (y, x) exactly."""
        unit = self.field.box(y, x)
        top, bottom = crop_span(unit[0], self.field.size[0], self.field.jump[0], self.image_hw[0])
        left, right = crop_span(unit[1], self.field.size[1], self.field.jump[1], self.image_hw[1])
        return top, left, bottom, right

    def boxes(self, positions: Tensor) -> list[Box]:
        return [self.box(int(y), int(x)) for y, x in positions.tolist()]

    def shifted(self, positions: Tensor, boxes: Sequence[Box]) -> Tensor:
        """Each unit's position in its crop's feature map: minus the crop offset in units."""
        offsets = torch.tensor([[b[0] // self.field.jump[0], b[1] // self.field.jump[1]]
                                for b in boxes], dtype=torch.long)
        return positions.cpu().long() - offsets

    def pays(self, boxes: Sequence[Box]) -> bool:
        """Whether the mean crop area is clearly below the image area (MAX_AREA_FRACTION)."""
        if not boxes:
            return False
        area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / len(boxes)
        return area < MAX_AREA_FRACTION * self.image_hw[0] * self.image_hw[1]


def group_by_shape(boxes: Sequence[Box]) -> list[list[int]]:
    """Request indices grouped by crop shape (first-seen order, request order inside a group),
    so that each group stacks into batches; a layer has at most four shapes (see module doc)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (top, left, bottom, right) in enumerate(boxes):
        groups.setdefault((bottom - top, right - left), []).append(i)
    return list(groups.values())


def gather(images: Tensor, ids: Sequence[int], boxes: Sequence[Box]) -> Tensor:
    """Stack the crops of requests `ids` (all of one shape) into a batch."""
    return torch.stack([images[i, :, boxes[i][0]:boxes[i][2], boxes[i][1]:boxes[i][3]]
                        for i in ids])


def paste(out: Tensor, crops: Tensor, ids: Sequence[int], boxes: Sequence[Box]) -> None:
    """Write each cropped projection into its zeroed full-size slot `out[i]` at its box."""
    crops = crops.to(out.device, out.dtype)
    for k, i in enumerate(ids):
        top, left, bottom, right = boxes[i]
        out[i].zero_()
        out[i, :, top:bottom, left:right] = crops[k]


def probe_positions(fmap_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Units checked once per (layer, input size): the centre, the bottom-right corner (crop
    ending at the image edge with an aligned offset) and the top-left corner (padding)."""
    h, w = fmap_hw
    return list(dict.fromkeys([(h // 2, w // 2), (h - 1, w - 1), (0, 0)]))


def agree(full: Tensor, cropped: Tensor) -> bool:
    """True when every probe's cropped projection equals the full one and none is all-zero
    (an all-zero probe would make the check vacuous, so it counts as a failure)."""
    for a, b in zip(full, cropped, strict=True):
        scale = float(a.abs().max())
        if not scale > 0 or not float((a - b).abs().max()) <= TOLERANCE * scale:
            return False
    return True
