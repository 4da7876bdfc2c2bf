"""Exact back-projection on a *window*: the part of the input around the unit's receptive
field that a backward pass is limited to (below, "crop" is the verb of cutting a window out).

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
normalisation over space, position-dependent terms, circular padding). Rather than trusting an
op list, the projector checks each (layer, input size) once, the first time crops would pay
(`WindowPlan.pays`), on the first image of that call: three probe units (`probe_positions`:
centre, bottom-right and top-left) projected on crops must equal their full-image projections
(`agree`: max abs difference <= 1e-5 of max |p|). When the check fails, when no probe is
active, when the model rejects a crop, or when the receptive field is unknown, every request
of that layer and size is projected on the full image. Limits: an op whose non-locality is
invisible at all three probes on that image would pass the check.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.device import out_of_memory, tf32_allowed
from pipeline.interp.receptive_field import Box, ReceptiveField
from pipeline.interp.sharing import passes

# Crops are used only when their estimated cost is below this fraction of the full-image path's.
# Both count image passes (`sharing.passes`) weighted by input area: a crop's forward and backward
# are proportional to its area, while the full-image path shares one forward between requests on
# the same image, so crops nearly as large as the image do not pay. With one request per image
# this is the rule "mean crop area < 0.9 image area". The estimate is slightly pessimistic: on
# 2 CPU cores (AlexNet, 224 px, 9 requests per image) estimates of 0.80 (conv5) and 0.57 (conv4)
# took 0.74 and 0.53 of the full path's time, so crops estimated at up to 0.9 still gain ~10%.
MAX_COST_FRACTION = 0.9

# Self-check tolerance: max |cropped - full| <= TOLERANCE * max |full|.
TOLERANCE = 1e-5

# (inputs [B, 3, h, w], units [B], positions [B, 2]) -> projections [B, 3, h, w]: the projector's
# full-input path for one batch of requests, applied to whole images or to crops. ("Chunk" is
# the zarr word: a block of a stored array.)
ProjectBatch = Callable[[Tensor, Tensor, Tensor], Tensor]


def window_span(start: int, size: int, jump: int, n: int) -> tuple[int, int]:
    """[o, e) of the input along one dimension of length n for a unit box [start, start+size)."""
    window = size + jump - 1
    if window >= n:
        return 0, n
    o = (max(start, 0) // jump) * jump
    if o + window <= n:
        return o, o + window
    return max(0, (n - window) // jump * jump), n


@dataclass(frozen=True)
class WindowPlan:
    """Crops of one layer at one input size: the layer's field and the image's (H, W)."""

    field: ReceptiveField
    image_hw: tuple[int, int]

    def box(self, y: int, x: int) -> Box:
        """(top, left, bottom_excl, right_excl) of the crop that projects unit (y, x) exactly."""
        unit = self.field.box(y, x)
        top, bottom = window_span(unit[0], self.field.size[0], self.field.jump[0], self.image_hw[0])
        left, right = window_span(unit[1], self.field.size[1], self.field.jump[1], self.image_hw[1])
        return top, left, bottom, right

    def boxes(self, positions: Tensor) -> list[Box]:
        return [self.box(int(y), int(x)) for y, x in positions.tolist()]

    def shifted(self, positions: Tensor, boxes: Sequence[Box]) -> Tensor:
        """Each unit's position in its crop's feature map: minus the crop offset in units."""
        offsets = torch.tensor([[b[0] // self.field.jump[0], b[1] // self.field.jump[1]]
                                for b in boxes], dtype=torch.long)
        return positions.cpu().long() - offsets

    def pays(self, image_keys: Sequence[Hashable], boxes: Sequence[Box], batch_size: int) -> bool:
        """Whether cropping is cheaper than the full-image path (see MAX_COST_FRACTION).

        image_keys: equal for requests on identical images; requests share a forward when they
        have the same image (full path) or the same image and crop (cropped path)."""
        if not boxes:
            return False
        h, w = self.image_hw
        full = passes(image_keys, batch_size) * h * w
        cropped = 0
        for ids in group_by_shape(boxes):
            top, left, bottom, right = boxes[ids[0]]
            keys = [(image_keys[i], boxes[i]) for i in ids]
            cropped += passes(keys, batch_size) * (bottom - top) * (right - left)
        return cropped < MAX_COST_FRACTION * full


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


def probe_positions(strength: Tensor) -> list[tuple[int, int]]:
    """Units checked once per (layer, input size), from the layer's max |activation| over
    channels [h, w]: the active units nearest (Chebyshev distance) to the centre, the
    bottom-right corner (a crop ending at the image edge with an aligned offset) and the
    top-left corner (the padding). Inactive units have all-zero projections, which would make
    the check vacuous; with no active unit at all there is no probe and the check fails."""
    h, w = strength.shape
    ys = torch.arange(h, device=strength.device).view(h, 1)
    xs = torch.arange(w, device=strength.device).view(1, w)
    found: list[tuple[int, int]] = []
    for ay, ax in ((h // 2, w // 2), (h - 1, w - 1), (0, 0)):
        distance = torch.maximum((ys - ay).abs(), (xs - ax).abs()).float()  # MPS: no float64
        distance[strength == 0] = float("inf")
        best = int(distance.flatten().argmin())
        if distance.flatten()[best] < float("inf"):
            found.append(divmod(best, w))
    return list(dict.fromkeys(found))


def agree(full: Tensor, cropped: Tensor) -> bool:
    """True when every probe's cropped projection equals the full one and none is all-zero
    (an all-zero projection would make the check vacuous, so it counts as a failure)."""
    return all(scale > 0 for scale in _peaks(full)) and difference(full, cropped) <= TOLERANCE


def difference(full: Tensor, cropped: Tensor) -> float:
    """The largest difference of a probe's cropped projection from its full one, relative to
    the full one's peak (probes whose projection is all zero left out)."""
    return max((float((a - b).abs().max()) / scale
                for a, b, scale in zip(full, cropped, _peaks(full), strict=True) if scale > 0),
               default=0.0)


def _peaks(full: Tensor) -> list[float]:
    return [float(a.abs().max()) for a in full]


_said: set[tuple[str, str]] = set()


def say_disagreement(layer: str, path: str, full: Tensor, cropped: Tensor) -> None:
    """Say on stderr, once per layer and path in a process, that the layer's projections take
    the slower full-image path because its ``path`` projections (windows, cones) differed from
    the full image's; silent where a probe was all zero (nothing went wrong)."""
    if (layer, path) in _said or not all(scale > 0 for scale in _peaks(full)):
        return
    _said.add((layer, path))
    cause = "; TF32 is on ([section] tf32 = true), which can do that" if tf32_allowed() else ""
    print(f"[projector] layer {layer}: projections on {path} differed from the full image's by "
          f"{difference(full, cropped):.1e} of the peak (more than {TOLERANCE:g}{cause}); "
          "projecting on the full image, exact but slower", file=sys.stderr)


def project_windows(
    project_batch: ProjectBatch, images: Tensor, units: Tensor, positions: Tensor, plan: WindowPlan,
    boxes: Sequence[Box], out: Tensor, batch_size: int,
) -> None:
    """Project every request on its crop, batched per crop shape, and paste into `out`."""
    shifted = plan.shifted(positions, boxes)
    units = units.cpu()
    for ids in group_by_shape(boxes):
        for start in range(0, len(ids), batch_size):
            part = ids[start:start + batch_size]
            index = torch.tensor(part, dtype=torch.long)
            paste(out, project_batch(gather(images, part, boxes), units[index], shifted[index]),
                  part, boxes)


def verify(
    project_batch: ProjectBatch, forward: Callable[[Tensor], Tensor], image: Tensor,
    plan: WindowPlan, layer: str = "",
) -> tuple[int, ...] | None:
    """One-time self-check of a layer at one input size on `image` [3, H, W]: the layer's output
    shape (C, h, w) if it passes, else None.

    `forward` gives the layer's output for a batch of full-size inputs. The check: the cropped
    projections of the probe units (`probe_positions`, each at its most active channel) equal
    their full-image projections (`agree`). A model that fails on a crop (e.g. one that checks
    its input size) fails the check."""
    with torch.no_grad():
        fmap = forward(image[None])[0]
    probes = probe_positions(fmap.abs().amax(dim=0))
    if not probes:
        return None
    positions = torch.tensor(probes, dtype=torch.long)
    units = torch.stack([fmap[:, y, x].abs().argmax() for y, x in probes]).cpu()
    batch = image[None].expand(len(probes), -1, -1, -1)
    full = project_batch(batch, units, positions)
    cropped = torch.zeros_like(full)
    try:
        project_windows(project_batch, batch, units, positions, plan, plan.boxes(positions),
                        cropped, len(probes))
    except Exception as error:  # not croppable: the caller uses the full-image path
        if out_of_memory(error):  # not a reason to take the path that needs more memory
            raise
        return None
    if agree(full, cropped):
        return tuple(fmap.shape)
    say_disagreement(layer or "?", "windows", full, cropped)
    return None
