"""Projection on a unit's cone: each layer computed only where the projected unit reads it.

A unit's projection depends on the input only through its receptive field, and at every layer
below it only through the units inside that field: its *cone*, one unit wide at the unit's own
layer and as wide as the field at the input. The projector's windows
(:mod:`pipeline.interp.windows`) crop the input to the field but then run every layer on the
whole crop: a conv5 unit of AlexNet pays for the 13 x 13 conv4 map of a nearly image-sized crop
while it reads 3 x 3 of it. Here each layer's output is computed on its part of the cone only,
forward and backward:

- going down from the unit (:meth:`Cones.needs`), a convolution or pooling window needs the
  inputs its needed outputs read, an elementwise op the same box of each input, a merge (add,
  concatenation) the same box of every branch; boxes are clipped to the map, since beyond it
  the op pads;
- going up (:meth:`Cones.project`), each needed box is computed from the windows of the boxes
  below it, padded explicitly as the op pads (zeros, -inf for max pooling) and run with no
  padding of its own (:mod:`pipeline.interp.regions`), under the method's rules at every
  rectifier (:class:`pipeline.interp.rules.Ruled`); the unit's activation, seeded, is then
  differentiated with respect to the input box.

The same numbers meet the same arithmetic as in the full network, so the projection equals the
full-image one up to float32 rounding. Requests are batched: each node's box has one size for
the batch (the largest of its requests', a few pixels more than an interior unit needs near the
borders) at each request's own offset. The graph is the model's ``torch.fx`` trace; a model that
cannot be traced, or with anything between input and layer other than windows and elementwise
ops (a squeeze-and-excitation gate, global pooling, attention, a normalisation over the map),
has no cones (:func:`cone_graph` returns None) and is projected as before. Whether a layer's
cones equal its full projections is checked once per layer and input size by the projector,
as the windows are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from pipeline.device import out_of_memory
from pipeline.interp.regions import (
    Box,
    Window,
    elementwise,
    one_thread,
    out_of_place,
    placed,
    run_node,
    scopes,
    union,
    window_of_function,
    window_of_module,
)
from pipeline.interp.rules import Ruled
from pipeline.models.evaluation import blank_image, evaluating


@dataclass
class Known:
    """A batch of maps known on one box each: ``patch`` ``[n, C, h, w]``, request i's at
    (``tops[i]``, ``lefts[i]``) of the map."""

    patch: Tensor
    tops: list[int]
    lefts: list[int]


class Cones:
    """The traced model from its input to one layer, every node a window or elementwise op."""

    def __init__(self, gm: fx.GraphModule, nodes: list[fx.Node], target: fx.Node,
                 windows: dict[fx.Node, Window], sizes: dict[fx.Node, tuple[int, int]]) -> None:
        self.gm, self.nodes, self.target = gm, nodes, target
        self.windows, self.sizes = windows, sizes  # window ops; (H, W) of every spatial node
        self.varying: set[fx.Node] = set()  # the nodes computed from the image
        for node in gm.graph.nodes:
            if node.op == "placeholder" or any(a in self.varying for a in node.all_input_nodes):
                self.varying.add(node)

    def spatial(self, node: fx.Node) -> list[fx.Node]:
        """The inputs of ``node`` computed from the image (not parameters); :func:`cone_graph`
        makes sure they are all feature maps."""
        return [a for a in node.all_input_nodes if a in self.varying]

    def needs(self, positions: Sequence[tuple[int, int]]) -> dict[fx.Node, list[Box]]:
        """Per node, each request's box of its output that the request's unit reads."""
        needs: dict[fx.Node, list[Box]] = {self.target: [(y, y + 1, x, x + 1)
                                                         for y, x in positions]}
        for node in reversed(self.nodes):
            boxes = needs.get(node)
            if boxes is None:
                continue
            window = self.windows.get(node)
            for source in self.spatial(node):
                height, width = self.sizes[source]
                reads = [_reads(box, window, height, width) for box in boxes] \
                    if window is not None else boxes
                before = needs.get(source)
                needs[source] = reads if before is None else \
                    [union([a, b]) for a, b in zip(before, reads, strict=True)]
        return needs

    def project(self, images: Tensor, units: Tensor, positions: Tensor, rule: str | None,
                out: Tensor | None = None, image_of: list[int] | None = None) -> Tensor:
        """``[n, C, H, W]``: the projection of ``units[i]`` at ``positions[i]`` (y, x) of the
        layer's map in ``images[i]`` (``images[image_of[i]]`` when given), with ``rule`` at
        every rectifier (None: the gradient), written into ``out`` when given."""
        needs = self.needs([(int(y), int(x)) for y, x in positions.tolist()])
        values: dict[fx.Node, Any] = {}
        with torch.enable_grad(), out_of_place(self.gm), \
                (Ruled(rule) if rule is not None else _nothing()):
            for node in self.nodes:
                if node.op == "get_attr":
                    values[node] = run_node(self.gm, node, values.__getitem__)
                elif node in needs:
                    values[node] = self._compute(node, needs[node], values, images,
                                                 image_of)
        source = next(node for node in self.nodes if node.op == "placeholder")
        given, reached = values[source], values[self.target]
        seed = torch.zeros_like(reached.patch)
        with one_thread():
            for i, (y, x) in enumerate(positions.tolist()):
                at = (i, int(units[i]), y - reached.tops[i], x - reached.lefts[i])
                seed[at] = reached.patch[at].detach()
        (grad,) = torch.autograd.grad(reached.patch, given.patch, seed)
        out = images.new_zeros((len(positions), *images.shape[1:]), dtype=torch.float32) \
            if out is None else out.zero_()
        h, w = grad.shape[2:]
        with one_thread():
            for i, (top, left) in enumerate(zip(given.tops, given.lefts, strict=True)):
                out[i, :, top:top + h, left:left + w] = grad[i]
        return out

    def _compute(self, node: fx.Node, boxes: list[Box], values: dict[fx.Node, Any],
                 images: Tensor, image_of: list[int] | None) -> Known:
        """The node's output on each request's box, from its inputs' regions."""
        height, width = self.sizes[node]
        h, tops = placed([(b[0], b[1]) for b in boxes], height)
        w, lefts = placed([(b[2], b[3]) for b in boxes], width)
        if node.op == "placeholder":
            patch = _crops(images, tops, lefts, h, w, image_of).requires_grad_(True)
            return Known(patch, tops, lefts)
        window = self.windows.get(node)
        if window is not None:
            (sy, sx), (py, px), (ky, kx) = window.stride, window.padding, window.extent
            windows = _windows(values[self.spatial(node)[0]], [t * sy - py for t in tops],
                               [left * sx - px for left in lefts], (h - 1) * sy + ky,
                               (w - 1) * sx + kx, window.fill)
            return Known(window.apply(windows), tops, lefts)
        spatial = self.spatial(node)

        def value(a: fx.Node) -> Any:
            if a in spatial:
                region = values[a]
                if region.tops == tops and region.lefts == lefts and \
                        tuple(region.patch.shape[2:]) == (h, w):
                    return region.patch
                return _windows(region, tops, lefts, h, w, 0.0)
            found = values.get(a)
            return found.patch if isinstance(found, Known) else found

        return Known(run_node(self.gm, node, value), tops, lefts)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _reads(box: Box, window: Window, height: int, width: int) -> Box:
    """The input box (clipped to the ``height`` x ``width`` map) that a window op's outputs in
    ``box`` read."""
    (sy, sx), (py, px), (ky, kx) = window.stride, window.padding, window.extent
    top, bottom, left, right = box
    return (max(0, top * sy - py), min(height, (bottom - 1) * sy - py + ky),
            max(0, left * sx - px), min(width, (right - 1) * sx - px + kx))


def _crops(images: Tensor, tops: list[int], lefts: list[int], h: int, w: int,
           image_of: list[int] | None = None) -> Tensor:
    """Request ``i``'s ``h`` x ``w`` crop at (``tops[i]``, ``lefts[i]``) of ``images[i]``, or
    of ``images[image_of[i]]``: requests on one image need no copy of it each."""
    out = images.new_empty((len(tops), images.shape[1], h, w))
    which = range(len(tops)) if image_of is None else image_of
    with one_thread():
        for i, (image, top, left) in enumerate(zip(which, tops, lefts, strict=True)):
            out[i] = images[image, :, top:top + h, left:left + w]
    return out


def _windows(region: Known, tops: list[int], lefts: list[int], h: int, w: int,
             fill: float) -> Tensor:
    """``[n, C, h, w]``: each request's window at (``tops[i]``, ``lefts[i]``) of a map known
    on ``region``'s boxes, ``fill`` elsewhere (the padding: a needed window's part inside the
    map lies in the region by construction). One ``gather`` for the batch: its backward is
    one scatter, where a copy per request would each add a zero gradient of the whole batch."""
    patch = region.patch
    n, channels, ph, pw = patch.shape
    # indices in numpy: under the rules' mode a torch clamp would be taken for a rectifier
    rows = np.asarray(tops)[:, None] + np.arange(h) - np.asarray(region.tops)[:, None]
    cols = np.asarray(lefts)[:, None] + np.arange(w) - np.asarray(region.lefts)[:, None]
    inside = ((rows >= 0) & (rows < ph))[:, :, None] & ((cols >= 0) & (cols < pw))[:, None, :]
    index = rows.clip(0, ph - 1)[:, :, None] * pw + cols.clip(0, pw - 1)[:, None, :]
    index_t = torch.from_numpy(index.reshape(n, 1, h * w)).to(patch.device)
    found = torch.gather(patch.flatten(2), 2, index_t.expand(n, channels, h * w))
    outside = torch.from_numpy(~inside).to(patch.device)[:, None]
    return found.reshape(n, channels, h, w).masked_fill(outside, fill)


#: the model's fx graph with the (H, W) of every node's 4-D output, at one input size
Traced = tuple[fx.GraphModule, dict[fx.Node, tuple[int, int]]]


def trace(model: nn.Module, input_hw: tuple[int, int]) -> Traced | None:
    """The model traced by fx (in eval mode) with its maps' sizes at ``input_hw``; None when
    it cannot be traced. Once per model and input size: :func:`cone_graph` takes it per
    layer."""
    try:
        with evaluating(model):
            gm = fx.symbolic_trace(model)
            ShapeProp(gm).propagate(blank_image(model, input_hw))
    except Exception as error:  # noqa: BLE001 - untraceable: the projector's other paths
        if out_of_memory(error):  # not a reason to take a path that needs more memory
            raise
        return None
    sizes: dict[fx.Node, tuple[int, int]] = {}
    for node in gm.graph.nodes:
        shape = getattr(node.meta.get("tensor_meta"), "shape", None)
        if shape is not None and len(shape) == 4:
            sizes[node] = (int(shape[2]), int(shape[3]))
    return gm, sizes


def cone_graph(model: nn.Module | Traced | None, layer: str,
               input_hw: tuple[int, int] = (0, 0)) -> Cones | None:
    """The cones of ``layer`` (a module name; its last call) in ``model`` at inputs of
    ``input_hw`` (or in a model :func:`trace` traced), or None when the model cannot be traced
    or the path to the layer has an op whose locality is not known (see the module doc)."""
    traced = trace(model, input_hw) if isinstance(model, nn.Module) else model
    if traced is None:
        return None
    gm, sizes = traced
    nodes = list(gm.graph.nodes)
    cones = Cones(gm, nodes, nodes[0], {}, sizes)
    targets = [node for node in nodes
               if layer in scopes(node) and node in sizes and node in cones.varying]
    if not targets:
        return None
    cones.target = targets[-1]
    cones.nodes = nodes = nodes[:nodes.index(cones.target) + 1]
    target = cones.target
    needed = {target}
    for node in reversed(nodes):
        if node not in needed or node.op in ("placeholder", "get_attr"):
            continue
        spatial = cones.spatial(node)
        if not spatial or any(a not in sizes for a in spatial) or node not in sizes:
            return None
        window = _window(gm, node)
        if window is not None and len(spatial) == 1:
            cones.windows[node] = window
        elif not (elementwise(gm, node) and all(sizes[a] == sizes[node] for a in spatial)):
            return None
        needed.update(spatial)
    if sum(node.op == "placeholder" for node in needed) != 1:
        return None
    return cones


def _window(gm: fx.GraphModule, node: fx.Node) -> Window | None:
    if node.op == "call_module":
        return window_of_module(gm.get_submodule(str(node.target)))
    if node.op == "call_function":
        return window_of_function(node, lambda a: _attribute(gm, a))
    return None


def _attribute(gm: fx.GraphModule, arg: Any) -> Any:
    """A functional op's argument: a parameter (get_attr) read off the module, else itself."""
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        return run_node(gm, arg, lambda a: a)
    return arg
