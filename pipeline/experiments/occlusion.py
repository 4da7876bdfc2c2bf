"""Figure 7: slide a grey square over an image and record what the network does.

The square is the data set's mean colour, i.e. zero in the normalised input the network sees,
so it removes evidence without adding an edge of its own colour. Its centres sweep the whole
image on a regular grid: cell ``(i, j)`` of a map has its square centred at
``((i + 0.5) * stride, (j + 0.5) * stride)`` input pixels, so each cell stands for one
``stride x stride`` block of the image and a map of ``ceil(H / stride) x ceil(W / stride)``
cells, drawn one block per cell, lies exactly over the image (the last row and column may run
past the border by less than a block). The square covers the pixels
``[floor(centre - size / 2), that + size)`` on each axis, clipped at the image border, so near
the border a smaller part of it is inside the image.

Per position the paper reads off (b) the total activation of one feature map, the one that is
strongest in the unoccluded image ("tracked": the channel of the chosen layer with the largest
single activation), (d) the probability of the true class and (e) the most probable class. (c)
is the deconvnet projection of the tracked map's strongest activation on the whole image.
Forward passes are batched over positions: each batch is one image with ``batch_size``
differently placed squares.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.device import out_of_memory
from pipeline.experiments.capture import forward_capturing
from pipeline.experiments.incremental import IncrementalGraph, Tail, agrees, batch_order

FILL = 0.0  # the occluder in normalised input space: the data set's mean grey
HEAD_BYTES = 256 * 2**20  # what the head reads, held for up to this many bytes of positions


@dataclass(frozen=True)
class OccluderGrid:
    """Where the square goes: its side and the step between centres, in input pixels."""

    size: int
    stride: int
    image_hw: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of every map: one cell per ``stride`` block of the image."""
        h, w = self.image_hw
        return math.ceil(h / self.stride), math.ceil(w / self.stride)

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the square of cell (row, column), bottom and right
        exclusive, clipped to the image (see the module doc)."""
        h, w = self.image_hw
        # twice the centre is an integer: (2k + 1) * stride
        top = ((2 * row + 1) * self.stride - self.size) // 2
        left = ((2 * column + 1) * self.stride - self.size) // 2
        return (max(0, top), max(0, left), min(h, top + self.size), min(w, left + self.size))

    def boxes(self) -> np.ndarray:
        """int64 ``[rows * columns, 4]``: every cell's box, row by row."""
        rows, columns = self.shape
        return np.array([self.box(i, j) for i in range(rows) for j in range(columns)],
                        dtype=np.int64).reshape(-1, 4)


def occluder_grid(image_hw: tuple[int, int], size: int = 0, stride: int = 0) -> OccluderGrid:
    """The grid of ``[occlusion]``: ``size`` 0 is a quarter of the input's shorter side, and
    ``stride`` 0 an eighth of the square (at least 1 px each)."""
    size = size or max(1, min(image_hw) // 4)
    stride = stride or max(1, size // 8)
    if size > min(image_hw):
        raise ValueError(f"occluder of {size} px is larger than the {image_hw} input")
    return OccluderGrid(size=size, stride=stride, image_hw=(int(image_hw[0]), int(image_hw[1])))


@dataclass(frozen=True)
class Occlusion:
    """Figure 7 for one image. The maps are ``[rows, columns]`` (see :class:`OccluderGrid`)."""

    unit: int  # the tracked channel of the layer
    position: tuple[int, int]  # (y, x) of its strongest activation in the layer's map
    clean_peak: float  # that activation, unoccluded
    clean_total: float  # the tracked map's sum, unoccluded
    clean_prob: float  # P(true class), unoccluded
    clean_predicted: int  # most probable class, unoccluded
    clean_predicted_prob: float
    total: np.ndarray  # (b) float32: the tracked map's sum with the square at each position
    prob_true: np.ndarray  # (d) float32: P(true class)
    predicted: np.ndarray  # (e) int32: the most probable class
    predicted_prob: np.ndarray  # float32: its probability
    projection: np.ndarray  # (c) float32 [H, W, C]: deconvnet projection of the peak


def occluded_batch(image: Tensor, boxes: Tensor, fill: float = FILL) -> Tensor:
    """``[n, C, H, W]``: ``image`` once per box, with the box set to ``fill``."""
    h, w = image.shape[-2:]
    ys = torch.arange(h, device=image.device)
    xs = torch.arange(w, device=image.device)
    inside_y = (ys >= boxes[:, :1]) & (ys < boxes[:, 2:3])  # [n, H]
    inside_x = (xs >= boxes[:, 1:2]) & (xs < boxes[:, 3:4])  # [n, W]
    mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # [n, 1, H, W]
    return torch.where(mask, torch.as_tensor(fill, dtype=image.dtype, device=image.device),
                       image[None])


def strongest_unit(feature_map: Tensor) -> tuple[int, tuple[int, int], float]:
    """(channel, (y, x), value) of the largest activation of one image's ``[C, H, W]`` map;
    ties go to the lowest channel, then the first position in row-major order."""
    channels, _, width = feature_map.shape
    peaks = feature_map.reshape(channels, -1).max(dim=1).values
    unit = int(torch.argmax(peaks))  # first maximum
    flat = int(torch.argmax(feature_map[unit].reshape(-1)))
    return unit, divmod(flat, width), float(peaks[unit])


def occlude(model: nn.Module, image: Tensor, true_class: int, module: str, grid: OccluderGrid,
            batch_size: int = 64, projector=None,
            on_batch: Callable[[int], object] | None = None,
            incremental: IncrementalGraph | None = None) -> Occlusion:
    """Figure 7 for one preprocessed ``image`` ``[C, H, W]`` of class ``true_class``: the tracked
    map of the module named ``module`` (a dotted name, not a layer label) and the class
    probabilities with the square at every position of ``grid``, ``batch_size`` positions per
    forward pass, and the deconvnet projection of the tracked map's peak (``projector``: a
    :class:`~pipeline.interp.Projector`, default a new deconvnet one). ``on_batch(n)`` is called
    after each forward pass of ``n`` positions (a progress bar's ``update``). With
    ``incremental`` (see :func:`incremental_graph`) each position recomputes only what its
    square changes (:mod:`pipeline.experiments.incremental`); without, it runs the whole
    network."""
    from pipeline.interp import Projector

    device = next(model.parameters()).device
    image = image.to(device)
    probabilities, maps, _ = forward_capturing(model, image[None], outputs=(module,))
    unit, position, peak = strongest_unit(maps[module][0])
    clean, clean_total = probabilities[0], float(maps[module][0, unit].float().sum())
    clean_predicted = int(torch.argmax(clean))

    boxes = grid.boxes()
    positions = len(boxes)
    totals = torch.zeros(positions, device=device)
    true_probs = torch.zeros(positions, device=device)
    predicted = torch.zeros(positions, dtype=torch.long, device=device)
    predicted_probs = torch.zeros(positions, device=device)

    def record(which: np.ndarray, probabilities: Tensor) -> None:
        index = torch.from_numpy(which).to(device)
        true_probs[index] = probabilities[:, true_class]
        best = probabilities.max(dim=1)
        predicted[index], predicted_probs[index] = best.indices, best.values

    if incremental is None:
        sweep = _full_sweep(model, image, module, unit)
        for start in range(0, positions, batch_size):
            which = np.arange(start, min(start + batch_size, positions))
            total, probabilities = sweep(boxes[which])
            totals[torch.from_numpy(which).to(device)] = total
            record(which, probabilities)
            if on_batch is not None:
                on_batch(len(which))
    else:
        _sweep_incrementally(incremental, image, unit, boxes, batch_size, totals, record,
                             on_batch)
    projector = projector or Projector(model, method="deconvnet", batch_size=1)
    projection = projector.project(image[None], module, torch.tensor([unit], device=device),
                                   torch.tensor([position], device=device))[0]

    def as_map(values: Tensor, dtype) -> np.ndarray:
        return values.cpu().numpy().astype(dtype).reshape(grid.shape)

    return Occlusion(
        unit=unit, position=(int(position[0]), int(position[1])), clean_peak=peak,
        clean_total=clean_total,
        clean_prob=float(clean[true_class]), clean_predicted=clean_predicted,
        clean_predicted_prob=float(clean[clean_predicted]),
        total=as_map(totals, np.float32), prob_true=as_map(true_probs, np.float32),
        predicted=as_map(predicted, np.int32), predicted_prob=as_map(predicted_probs, np.float32),
        projection=projection.permute(1, 2, 0).float().cpu().numpy())


# boxes [n, 4] (top, left, bottom, right) -> (the tracked channel's totals [n], P(class) [n, K])
Sweep = Callable[[np.ndarray], tuple[Tensor, Tensor]]


def _full_sweep(model: nn.Module, image: Tensor, module: str, unit: int) -> Sweep:
    """Each occluded copy through the whole network."""
    def sweep(boxes: np.ndarray) -> tuple[Tensor, Tensor]:
        batch = occluded_batch(image, torch.from_numpy(boxes).to(image.device))
        probabilities, maps, _ = forward_capturing(model, batch, outputs=(module,))
        return maps[module][:, unit].float().sum(dim=(1, 2)), probabilities
    return sweep


def _incremental_sweep(graph: IncrementalGraph, image: Tensor, unit: int) -> Sweep:
    """Only what each square changes, from the unoccluded image's maps (computed here once)."""
    clean = graph.clean(image[None])

    def sweep(boxes: np.ndarray) -> tuple[Tensor, Tensor]:
        total, tail = graph.occluded(clean, boxes, unit, FILL)
        return total, graph.finish(clean, [tail]).float().softmax(dim=1)
    return sweep


def _sweep_incrementally(graph: IncrementalGraph, image: Tensor, unit: int, boxes: np.ndarray,
                         batch_size: int, totals: Tensor,
                         record: Callable[[np.ndarray, Tensor], None],
                         on_batch: Callable[[int], object] | None) -> None:
    """Every position incrementally, ``batch_size`` at a time in :func:`batch_order`, the
    head run once for many batches (up to :data:`HEAD_BYTES` of what it reads): a classifier's
    weights are read once per pass, so it costs less the more positions share a pass."""
    clean = graph.clean(image[None])
    order = batch_order(boxes)
    pending: list[tuple[np.ndarray, Tail]] = []

    def flush() -> None:
        for stop in dict.fromkeys(tail.stop for _, tail in pending):
            group = [(which, tail) for which, tail in pending if tail.stop == stop]
            output = graph.finish(clean, [tail for _, tail in group])
            record(np.concatenate([which for which, _ in group]),
                   output.float().softmax(dim=1))
        pending.clear()

    for start in range(0, len(boxes), batch_size):
        which = order[start:start + batch_size]
        total, tail = graph.occluded(clean, boxes[which], unit, FILL)
        totals[torch.from_numpy(which).to(totals.device)] = total
        pending.append((which, tail))
        if sum(_bytes(t.live) for _, t in pending) >= HEAD_BYTES:
            flush()
        if on_batch is not None:
            on_batch(len(which))
    flush()


def _bytes(values: dict) -> int:
    return sum(v.numel() * v.element_size() for v in values.values() if isinstance(v, Tensor))


def incremental_graph(model: nn.Module, image: Tensor, module: str, grid: OccluderGrid
                      ) -> tuple[IncrementalGraph | None, str]:
    """The model ready for incremental occlusion of layer ``module``, checked on ``image``
    against the full forward at the first, middle and last positions of ``grid``; or None
    and why not (the caller occludes with the full forward and says so). The string says
    where incremental inference stops before the tracked layer, if it does."""
    device = next(model.parameters()).device
    image = image.to(device)
    _, maps, _ = forward_capturing(model, image[None], outputs=(module,))
    unit = strongest_unit(maps[module][0])[0]
    boxes = grid.boxes()
    probe = boxes[[0, len(boxes) // 2, len(boxes) - 1]]
    full = None
    why = ""
    # channels-last maps where they are faster (a CPU), unless the model needs the contiguous
    # layout (a .view of a map): then, and on other devices, as the model computes them
    for channels_last in (True, False) if device.type == "cpu" else (False,):
        try:
            graph = IncrementalGraph.trace(model, module, image[None], maps[module],
                                           channels_last)
        except ValueError as error:
            why = str(error)
            continue
        try:
            ours = _incremental_sweep(graph, image, unit)(probe)
        except Exception as error:  # noqa: BLE001 - an op that cannot run on a patch
            if out_of_memory(error):  # not a reason to take the path that needs more memory
                raise
            why = f"{type(error).__name__}: {error}"
            continue
        full = full or _full_sweep(model, image, module, unit)(probe)
        if agrees(ours, full):
            return graph, graph.stops_at or ""
        why = "it does not reproduce the full forward on this model"
    return None, why
