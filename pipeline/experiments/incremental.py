"""Occlusion by incremental inference: recompute only what the grey square changes.

An occluder changes the input only inside its square, and a convolution or pooling window
changes only the outputs whose window overlaps a change, so with the square at one position
most of every feature map is the unoccluded image's. Krypton (Nakandala, Kumar,
Papakonstantinou, "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations", SIGMOD 2019) computes the unoccluded maps once and, per position, recomputes
layer by layer only the region the square's footprint reaches. This module does that along the
model's ``torch.fx`` graph, batched over positions:

- every node's value is either the unoccluded one (computed once per image by
  :meth:`IncrementalGraph.clean`), a *region* (per position: a patch of one size for the whole
  batch at its own offset, and the box inside it that really changed; outside the patch the
  map is the unoccluded one), or a *full* batch ``[positions, ...]``;
- a convolution or pooling window (module or functional) maps each position's changed box to
  the outputs whose window overlaps it, gathers the windows those outputs read (the unoccluded
  map, padded as the op pads it, with the patch laid over it) and applies the op with no
  padding of its own: the same arithmetic on the same numbers, so the result equals the full
  forward's up to float32 rounding (the engine may sum in another order on a smaller map);
- an elementwise op (activations, eval-mode batch norm, LRN, dropout, add, mul, concatenation
  of channels) runs on the patches, over the union of its inputs' boxes;
- anything else (flatten, linear, global or adaptive pooling, a squeeze-and-excitation scale,
  attention) first lays every patch into a full copy of the map and runs as in the full
  forward. After the tracked layer this is the classifier head, computed in full as it must
  be; before it, it is where incremental inference stops (:attr:`IncrementalGraph.stops_at`
  says where and why, and the stage says it once).

The batch's patch is the largest changed box of its positions, so positions are handed over in
batches of similar boxes (:func:`batch_order`): those near a border, whose square is clipped,
together. In-place ops run out of place (a patch is never shared with the unoccluded map).
Whether this equals the full forward on a given model is checked, not assumed:
:func:`agrees` compares both on a few positions once per run, and a model that fails (or
cannot be traced) is occluded with the full forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from pipeline.device import out_of_memory
from pipeline.interp.regions import (
    Region,
    Window,
    describe,
    elementwise,
    gather,
    one_thread,
    out_of_place,
    placed,
    run_node,
    scopes,
    span,
    union,
    window_of_function,
    window_of_module,
)

_METADATA_METHODS = {"size", "dim"}


@dataclass
class Tail:
    """What a pass left for the head: the graph index it stopped after, the values later
    nodes read (dense for the batch, or the unoccluded ones), and the batch's positions."""

    stop: int
    live: dict[fx.Node, Any]
    n: int


class IncrementalGraph:
    """The model's fx graph, ready to occlude one image at a time; build with :meth:`trace`."""

    def __init__(self, gm: fx.GraphModule, tracked: fx.Node, channels_last: bool = False) -> None:
        self.gm, self.tracked = gm, tracked
        # the maps (and every patch gathered from them) channels-last: on a CPU, oneDNN's
        # convolutions run faster on that layout (AlexNet's occlusion per image 4.05 -> 3.67 s),
        # summing in another order (the results agree within float32 rounding)
        self.channels_last = channels_last
        self.order = {node: i for i, node in enumerate(gm.graph.nodes)}
        self.last_use = {node: max((self.order[u] for u in node.users), default=-1)
                         for node in gm.graph.nodes}  # graph index of its last reader
        self.varying: set[fx.Node] = set()  # the nodes computed from the image
        for node in gm.graph.nodes:
            if node.op == "placeholder" or any(a in self.varying for a in node.all_input_nodes):
                self.varying.add(node)
        self.stops_at: str | None = None  # where incremental inference gave way before the
        # tracked layer, and why (set by the first batch)

    @classmethod
    def trace(cls, model: nn.Module, module: str, image: Tensor,
              tracked_map: Tensor, channels_last: bool = False) -> IncrementalGraph:
        """Trace ``model`` (in eval mode) and find the node whose value is the output of
        ``module``'s last call, as ``tracked_map`` (its value on ``image``, ``[1, C, h, w]``)
        confirms; raises ``ValueError`` saying why when either cannot be done (or the traced
        graph does not run on the maps in the layout asked for)."""
        from pipeline.models.evaluation import evaluating

        with evaluating(model):
            try:
                gm = fx.symbolic_trace(model)
            except Exception as error:  # data-dependent control flow, untraceable modules
                raise ValueError(f"the model cannot be traced by torch.fx ({error})") from error
        graph = cls(gm, next(iter(gm.graph.nodes)), channels_last)
        try:
            values = graph.clean(image)
        except RuntimeError as error:  # e.g. a view that needs the contiguous layout
            if out_of_memory(error):  # not a reason to take the path that needs more memory
                raise
            raise ValueError(f"the traced graph does not run ({error})") from error
        # float32 rounding of the map's scale: the layout may sum in another order
        tolerance = 1e-5 * max(1.0, float(tracked_map.abs().max()))
        for node in reversed(list(gm.graph.nodes)):
            if module in scopes(node) and isinstance(values.get(node), Tensor) \
                    and values[node].shape == tracked_map.shape \
                    and torch.allclose(values[node], tracked_map, rtol=1e-5, atol=tolerance):
                graph.tracked = node
                return graph
        raise ValueError(f"no traced node computes {module}'s output")

    # ------------------------------------------------------------------------------------
    def clean(self, image: Tensor) -> dict[fx.Node, Any]:
        """Every node's value on the unoccluded ``image`` ``[1, C, H, W]``."""
        values: dict[fx.Node, Any] = {}
        if self.channels_last and image.dim() == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), out_of_place(self.gm):
            for node in self.gm.graph.nodes:
                if node.op == "output":
                    break
                values[node] = image if node.op == "placeholder" else run_node(self.gm, node,
                                                                            values.__getitem__)
        return values

    def occluded(self, clean: dict[fx.Node, Any], boxes: np.ndarray, unit: int,
                 fill: float) -> tuple[Tensor, Tail]:
        """(the tracked channel's total ``[n]``, what is left of the pass) with the square at
        each of ``boxes`` (``[n, 4]`` top, left, bottom, right in input pixels) filled with
        ``fill``. The pass stops where no region is left and the tracked layer is behind it:
        the rest (the classifier head) is dense for every position, and :meth:`finish` runs
        it on several batches' tails at once."""
        values: dict[fx.Node, Any] = {}
        total: Tensor | None = None
        n = len(boxes)
        open_regions: set[fx.Node] = set()
        tracked = self.order[self.tracked]
        with torch.no_grad(), out_of_place(self.gm):
            for node in self.gm.graph.nodes:
                if node.op == "placeholder":
                    values[node] = _occluded_input(clean[node], boxes, fill)
                elif node.op == "output":
                    break
                else:
                    values[node] = self._step(node, clean, values, n)
                if node is self.tracked:
                    total = _channel_total(values[node], unit, n)
                index = self.order[node]
                if isinstance(values[node], Region):
                    open_regions.add(node)
                open_regions = {a for a in open_regions if self.last_use[a] > index}
                if index >= tracked and not open_regions:
                    break
        assert total is not None
        live = {a: v for a, v in values.items() if self.last_use[a] > index}
        return total, Tail(index, live, n)

    def finish(self, clean: dict[fx.Node, Any], tails: list[Tail]) -> Tensor:
        """The model's output for the positions of ``tails`` (all stopped at the same node),
        in their order: one pass through the head for all of them, when their values can be
        stacked (tensors), else one per tail."""
        start = tails[0].stop
        values: dict[fx.Node, Any] = {}
        n = sum(tail.n for tail in tails)
        for node in tails[0].live:
            parts = [tail.live[node] for tail in tails]
            if not all(isinstance(p, Tensor) for p in parts):
                if len(tails) == 1:
                    values[node] = parts[0]
                    continue
                return torch.cat([self.finish(clean, [tail]) for tail in tails])
            values[node] = torch.cat([self._batch_value(node, p, clean, tail.n)
                                      for p, tail in zip(parts, tails, strict=True)]) \
                if len(tails) > 1 else parts[0]
        with torch.no_grad(), out_of_place(self.gm):
            for node in self.gm.graph.nodes:
                if self.order[node] <= start:
                    continue
                if node.op == "output":
                    return fx.node.map_arg(node.args[0],
                                           lambda a: self._batch_value(a, values.get(a, clean[a]),
                                                                       clean, n))
                values[node] = run_node(self.gm, node, lambda a: self._batch_value(
                    a, values.get(a, clean[a]), clean, n))
        raise ValueError("the traced graph has no output")

    def _batch_value(self, node: fx.Node, value: Any, clean: dict[fx.Node, Any], n: int) -> Any:
        """A dense value for ``n`` positions: the unoccluded one repeated where it is that."""
        return _as_batch(value, clean[node], n, node in self.varying)

    # ------------------------------------------------------------------------------------
    def _step(self, node: fx.Node, clean: dict[fx.Node, Any], values: dict[fx.Node, Any],
              n: int) -> Any:
        inputs = node.all_input_nodes
        if not any(isinstance(values[a], Region) or _batched(values[a], clean[a])
                   for a in inputs):
            return clean[node]  # nothing it reads changed
        regional = [a for a in inputs if isinstance(values[a], Region)]
        batched = [a for a in inputs if not isinstance(values[a], Region)
                   and _batched(values[a], clean[a])]
        if regional and not batched:
            if len(regional) == 1 and len(inputs) == 1 or self._only_constants(node, regional):
                window = self._window(node, values)
                if window is not None:
                    return _windowed(values[regional[0]], window, clean[node])
            if elementwise(self.gm, node):
                merged = _elementwise_region(self.gm, node, clean, values)
                if merged is not None:
                    return merged
        if _metadata(node):
            return run_node(self.gm, node, lambda a: self._batch(a, clean, values, n, view=True))
        if self.stops_at is None and self.order[node] <= self.order[self.tracked] \
                and any(not values[a].whole() for a in regional):
            self.stops_at = f"{describe(self.gm, node)} needs the whole map"
        return run_node(self.gm, node, lambda a: self._batch(a, clean, values, n))

    def _batch(self, node: fx.Node, clean: dict[fx.Node, Any], values: dict[fx.Node, Any],
               n: int, view: bool = False) -> Any:
        return _as_batch(values[node], clean[node], n, node in self.varying, view)

    def _only_constants(self, node: fx.Node, regional: list[fx.Node]) -> bool:
        """A functional conv's weight and bias are graph inputs too (get_attr nodes)."""
        return len(regional) == 1 and all(a.op == "get_attr" for a in node.all_input_nodes
                                          if a is not regional[0])

    def _window(self, node: fx.Node, values: dict[fx.Node, Any]) -> Window | None:
        if node.op == "call_module":
            return window_of_module(self.gm.get_submodule(str(node.target)))
        if node.op == "call_function":
            return window_of_function(node, lambda a: _constant(self.gm, a, values))
        return None



def _batched(value: Any, clean: Any) -> bool:
    """Whether a value was computed per position (a full batch, or a size read off one),
    rather than being the unoccluded one."""
    return value is not clean and not isinstance(value, Region)


def _as_batch(value: Any, clean: Any, n: int, varying: bool, view: bool = False) -> Any:
    """A value as the full forward would have it for ``n`` positions (``varying``: computed
    from the image, so batched there; a parameter is not)."""
    if isinstance(value, Region):
        if view:
            return value.clean.expand(n, *value.clean.shape[1:])
        return value.full()
    if varying and value is clean and isinstance(value, Tensor) and value.dim() >= 1:
        return value.expand(n, *value.shape[1:])
    return value


def _constant(gm: fx.GraphModule, arg: Any, values: dict[fx.Node, Any]) -> Any:
    if isinstance(arg, fx.Node):
        value = values[arg]
        return value.clean if isinstance(value, Region) else value
    return arg


def _metadata(node: fx.Node) -> bool:
    """``x.size()``, ``x.dim()``, ``x.shape``: they read the shape, not the values."""
    return (node.op == "call_method" and node.target in _METADATA_METHODS) or (
        node.op == "call_function" and node.target is getattr and len(node.args) > 1
        and node.args[1] in ("shape", "ndim", "dtype", "device"))


def _elementwise_region(gm: fx.GraphModule, node: fx.Node, clean: dict[fx.Node, Any],
                        values: dict[fx.Node, Any]) -> Region | None:
    """An elementwise op on the union of its regional inputs' patches; None when an input is
    a map of another size (then it is not elementwise in space)."""
    out = clean[node]
    if not isinstance(out, Tensor) or out.dim() != 4:
        return None
    height, width = out.shape[2:]
    spatial = [a for a in node.all_input_nodes
               if isinstance(clean[a], Tensor) and clean[a].dim() == 4
               and tuple(clean[a].shape[2:]) != (1, 1)]
    if any(tuple(clean[a].shape[2:]) != (height, width) for a in spatial):
        return None
    regions = [values[a] for a in spatial if isinstance(values[a], Region)]
    if len(spatial) == 1 and regions:  # one map: the op runs on its patch as it lies
        only = regions[0]
        patch = run_node(gm, node, lambda a: only.patch if a is spatial[0] else _constant(gm, a,
                                                                                    values))
        return Region(out, patch, only.tops, only.lefts, only.changed)
    n = len(regions[0].tops)
    changed = [union([r.changed[i] for r in regions]) for i in range(n)]
    h, tops = placed([(c[0], c[1]) for c in changed], height)
    w, lefts = placed([(c[2], c[3]) for c in changed], width)

    def value(a: fx.Node) -> Any:
        if a in spatial:
            return gather(values[a], clean[a], tops, lefts, h, w)
        v = values[a]
        return v.clean if isinstance(v, Region) else v

    patch = run_node(gm, node, value)
    return Region(out, patch, tops, lefts, changed)


def _windowed(value: Region, window: Window, out_clean: Tensor) -> Region:
    """A convolution or pooling window on a region: the outputs whose windows overlap each
    position's changed box, from those windows of the (padded) map."""
    clean = value.clean
    (height, width), (out_h, out_w) = clean.shape[2:], out_clean.shape[2:]
    rows = [span((c[0], c[1]), window, 0, out_h) for c in value.changed]
    cols = [span((c[2], c[3]), window, 1, out_w) for c in value.changed]
    h, tops = placed(rows, out_h)
    w, lefts = placed(cols, out_w)
    (ky, kx), (sy, sx), (py, px) = window.extent, window.stride, window.padding
    # pad once so that every window, the last one of a ceil-mode pool included, is inside
    bottom = max(0, (out_h - 1) * sy + ky - height - py)
    right = max(0, (out_w - 1) * sx + kx - width - px)
    padded = F.pad(clean, (px, right, py, bottom), value=window.fill) \
        if (px or right or py or bottom) else clean
    windows = gather(value, clean, [t * sy - py for t in tops], [left * sx - px for left in lefts],
                      (h - 1) * sy + ky, (w - 1) * sx + kx, padded, (py, px))
    changed = [(r[0], r[1], c[0], c[1]) for r, c in zip(rows, cols, strict=True)]
    return Region(out_clean, window.apply(windows), tops, lefts, changed)


def _occluded_input(image: Tensor, boxes: np.ndarray, fill: float) -> Region:
    """The input as a region: per position, the square's box (clipped to the image) filled."""
    height, width = image.shape[2:]
    h, tops = placed([(int(b[0]), int(b[2])) for b in boxes], height)
    w, lefts = placed([(int(b[1]), int(b[3])) for b in boxes], width)
    patch = gather(None, image, tops, lefts, h, w)
    with one_thread():
        for i, (top, left, bottom, right) in enumerate(boxes.tolist()):
            patch[i, :, top - tops[i]:bottom - tops[i], left - lefts[i]:right - lefts[i]] = fill
    changed = [(int(b[0]), int(b[2]), int(b[1]), int(b[3])) for b in boxes]
    return Region(image, patch, tops, lefts, changed)


def _channel_total(value: Any, unit: int, n: int) -> Tensor:
    """Each position's sum of the tracked channel, summed as the full forward sums it."""
    if isinstance(value, Region):
        maps = value.channel(unit).full()[:, 0]
    else:
        maps = value.expand(n, *value.shape[1:])[:, unit]
    return maps.float().sum(dim=(1, 2))


def batch_order(boxes: np.ndarray) -> np.ndarray:
    """Positions sorted so that each batch holds squares of like size (a batch's patch is its
    largest box): clipped ones near the borders together, then the interior."""
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.lexsort((np.arange(len(boxes)), widths, heights))


def agrees(incremental: tuple[Tensor, Tensor], full: tuple[Tensor, Tensor]) -> bool:
    """Whether the tracked totals and the class probabilities of both ways agree to float32
    tolerance (1e-4 of each quantity's scale)."""
    for a, b in zip(incremental, full, strict=True):
        scale = max(1.0, float(b.abs().max()))
        if a.shape != b.shape or not float((a.float() - b.float()).abs().max()) <= 1e-4 * scale:
            return False
    return True
