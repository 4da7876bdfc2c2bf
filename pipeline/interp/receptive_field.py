"""Analytic receptive fields of every feature-map module, and cropping of tiles around them.

The atlas shows, for every top activation, the image patch that the unit can see next to the
deconvnet projection of the same patch. Both come from one geometric box per unit, computed here
from the model's layer geometry (not from gradients), so image patch and projection always line
up and every tile of a layer has the same size.

Geometry is propagated along the `torch.fx` graph of the model so that branches and merges
(ResNet residual adds, Inception concatenations) are handled: at a merge the boxes of the inputs
are united. A module that is called several times (torchvision ResNet blocks call `self.relu`
twice) is reported with the geometry of its LAST call in the graph, which is also the call whose
output the projector records (see `module_call_counts`). If the model cannot be traced by fx,
geometry is instead propagated through forward hooks in call order, which assumes a purely
sequential model (true for AlexNet/VGG-like stacks, wrong for branchy models).

Known geometry: Conv2d, MaxPool2d, AvgPool2d, adaptive pooling with regular bins, and the
functional conv2d / max_pool2d / avg_pool2d. Any other module or function that keeps the spatial
size is treated as elementwise (ReLU, BatchNorm in eval mode, LRN, Dropout, add, cat, ...); one
that changes it makes the geometry unknown, and such modules (and what follows) are left out.
So is whatever comes after a normalisation whose statistics span the feature map (GroupNorm,
InstanceNorm, LayerNorm over H and W: see `pipeline.interp.spatial`) or is merged with a
tensor computed from the whole map (a squeeze-and-excitation scale, ``x / x.sum()``): each of
its units depends on the whole image. Permutes are followed (ConvNeXt works channels-last
between two permutes), and only channels-first outputs are reported as feature maps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from pipeline.device import out_of_memory
from pipeline.interp.spatial import (
    channel_split,
    module_spans,
    node_hw,
    node_shape,
    spanning_normalisation,
    spatial_axes,
)
from pipeline.models.evaluation import blank_image, evaluating

Box = tuple[int, int, int, int]

_REUSE_SUFFIX = re.compile(r"@\d+$")


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of the units of one feature map, per dimension (rows, cols).

    `first` is the input coordinate of the top-left pixel of unit (0, 0)'s field (negative when
    the field reaches into the zero padding), `jump` the input distance between adjacent units
    and `size` the field's extent in input pixels.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    first: tuple[int, int]

    def box(self, y: int, x: int) -> Box:
        """(top, left, bottom_exclusive, right_exclusive) of unit (y, x), not clipped."""
        top = self.first[0] + y * self.jump[0]
        left = self.first[1] + x * self.jump[1]
        return (top, left, top + self.size[0], left + self.size[1])

    def tile_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The one tile size shared by every unit of this layer (see `field_tile`)."""
        return (min(self.size[0], image_hw[0]), min(self.size[1], image_hw[1]))


_IDENTITY = ReceptiveField(size=(1, 1), jump=(1, 1), first=(0, 0))

#: (field per feature-map module, the spanning normalisation per module left out after one)
Traced = tuple[dict[str, ReceptiveField], dict[str, str]]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(
    rf: ReceptiveField, kernel: tuple[int, int], stride: tuple[int, int],
    padding: tuple[int, int], dilation: tuple[int, int],
) -> ReceptiveField:
    """Apply one sliding window (conv or pool) per dimension."""
    size, jump, first = [], [], []
    for d in range(2):
        k_eff = dilation[d] * (kernel[d] - 1) + 1
        size.append(rf.size[d] + (k_eff - 1) * rf.jump[d])
        first.append(rf.first[d] - padding[d] * rf.jump[d])
        jump.append(rf.jump[d] * stride[d])
    return ReceptiveField(tuple(size), tuple(jump), tuple(first))  # type: ignore[arg-type]


def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    if isinstance(m.padding, str):  # 'valid' or 'same' (stride 1)
        if m.padding == "valid":
            return (0, 0)
        return tuple(  # type: ignore[return-value]
            (m.dilation[d] * (m.kernel_size[d] - 1)) // 2 for d in range(2)
        )
    return _pair(m.padding)


def _adaptive(rf: ReceptiveField, in_hw: Sequence[int], out_hw: Sequence[int]):
    """Adaptive pooling as a regular window when its bins are regular; else unknown (None)."""
    kernel, stride = [], []
    for d in range(2):
        n, m = int(in_hw[d]), int(out_hw[d])
        if m == 1:
            kernel.append(n)
            stride.append(n)
        elif n % m == 0:
            kernel.append(n // m)
            stride.append(n // m)
        else:
            return None
    return _window(rf, tuple(kernel), tuple(stride), (0, 0), (1, 1))  # type: ignore[arg-type]


def _module_rf(
    m: nn.Module, rf: ReceptiveField, in_hw: Sequence[int], out_hw: Sequence[int]
) -> ReceptiveField | None:
    """Geometry after module `m`; modules that keep the spatial size are elementwise."""
    if isinstance(m, nn.Conv2d):
        return _window(rf, _pair(m.kernel_size), _pair(m.stride), _conv_padding(m),
                       _pair(m.dilation))
    if isinstance(m, nn.MaxPool2d):
        stride = m.stride if m.stride is not None else m.kernel_size
        return _window(rf, _pair(m.kernel_size), _pair(stride), _pair(m.padding),
                       _pair(m.dilation))
    if isinstance(m, nn.AvgPool2d):
        stride = m.stride if m.stride is not None else m.kernel_size
        return _window(rf, _pair(m.kernel_size), _pair(stride), _pair(m.padding), (1, 1))
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        return _adaptive(rf, in_hw, out_hw)
    if tuple(in_hw) == tuple(out_hw):  # ReLU, BatchNorm, LRN, Dropout, Identity, ...
        return rf
    return None


def _union(rfs: list[ReceptiveField]) -> ReceptiveField | None:
    """Union of the boxes of inputs merged elementwise (add, mul, cat); jumps must agree."""
    if any(r.jump != rfs[0].jump for r in rfs):
        return None
    first = tuple(min(r.first[d] for r in rfs) for d in range(2))
    end = tuple(max(r.first[d] + r.size[d] for r in rfs) for d in range(2))
    size = tuple(end[d] - first[d] for d in range(2))
    return ReceptiveField(size, rfs[0].jump, first)  # type: ignore[arg-type]


def _function_rf(gm: fx.GraphModule, node: fx.Node, rf: ReceptiveField) -> ReceptiveField | None:
    """Functional conv/pool (e.g. Inception's F.max_pool2d); None for other spatial functions."""
    name = getattr(node.target, "__name__", str(node.target))
    if not any(key in name for key in ("conv", "pool")):
        return rf  # elementwise: relu, add, mul, cat, dropout, ...
    if name not in ("conv2d", "max_pool2d", "avg_pool2d"):
        return None
    norm = node.normalized_arguments(gm, normalize_to_only_use_kwargs=True)
    if norm is None:
        return None
    kw = norm.kwargs
    if name == "conv2d":
        weight = kw["weight"].meta.get("tensor_meta") if isinstance(kw["weight"], fx.Node) else None
        if weight is None or isinstance(kw.get("padding", 0), str):
            return None
        kernel = (int(weight.shape[2]), int(weight.shape[3]))
    else:
        kernel = _pair(kw["kernel_size"])
    stride = kw.get("stride") or (kernel if name != "conv2d" else 1)
    return _window(rf, kernel, _pair(stride), _pair(kw.get("padding", 0)),
                   _pair(kw.get("dilation", 1)))


def _fx_fields(model: nn.Module, input_size: tuple[int, int]) -> Traced:
    with evaluating(model):  # traced in eval mode: a train-only branch (AuxLogits) is not run
        gm = fx.symbolic_trace(model)
        ShapeProp(gm).propagate(blank_image(model, input_size))
    geo: dict[fx.Node, ReceptiveField | None] = {}
    axes: dict[fx.Node, tuple[int, int] | None] = {}
    image: set[fx.Node] = set()  # the nodes computed from the image
    why: dict[fx.Node, str] = {}  # unknown nodes -> the spanning normalisation they come after
    out: dict[str, ReceptiveField] = {}
    unknown: dict[str, str] = {}

    def size(node: fx.Node) -> tuple[int, int] | None:
        known = axes.get(node)
        if known is not None:
            return node_hw(node, known)
        return node_hw(node) if len(node_shape(node) or ()) == 4 else None

    def whole(node: fx.Node) -> bool:
        """A tensor computed from the image without a geometry (a squeeze-excitation scale
        from global pooling, a sum or norm over the whole map): what it is merged with is no
        local function of the input any more. (One computed from parameters alone, such as a
        standardised convolution weight, is a constant.)"""
        return geo.get(node) is None and node in image and node_shape(node) is not None

    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in image for a in node.all_input_nodes):
            image.add(node)
        if channel_split(node, axes):
            axes[node] = axes[node.all_input_nodes[0]]
            geo[node] = geo.get(node.all_input_nodes[0])
            continue
        axes[node] = spatial_axes(gm, node, axes)
        hw = size(node)
        ins = [a for a in node.all_input_nodes if geo.get(a) is not None]
        rf: ReceptiveField | None = None
        if node.op == "placeholder":
            rf = _IDENTITY if hw is not None else None
        elif hw is not None and ins and not any(whole(a) for a in node.all_input_nodes):
            if node.op == "call_module" and len(ins) == 1:
                in_rf, in_hw = geo[ins[0]], size(ins[0])
                # ins: the inputs with a geometry, which have a size (all but a channel split's
                # tuple of parts, which no module computing a field is given)
                assert in_rf is not None and in_hw is not None
                rf = _module_rf(model.get_submodule(node.target), in_rf, in_hw, hw)
            elif node.op == "call_function" and len(ins) == 1 and size(ins[0]) != hw:
                rf = _function_rf(gm, node, geo[ins[0]])  # type: ignore[arg-type]
            elif all(size(a) == hw for a in ins):  # elementwise op or merge
                rf = _union([geo[a] for a in ins])  # type: ignore[misc]
                if rf is not None and node.op == "call_function":
                    rf = _function_rf(gm, node, rf)
            spans = spanning_normalisation(gm, node, axes.get(node.all_input_nodes[0]))
            if rf is not None and spans is not None:
                rf, why[node] = None, spans  # every unit after it sees the whole image
        if rf is None and node not in why:
            after = next((why[a] for a in node.all_input_nodes if a in why), None)
            if after is not None:
                why[node] = after
        geo[node] = rf
        if rf is not None and (axes[node] != (2, 3) or len(node_shape(node) or ()) != 4):
            continue  # channels-last, or a 5-D view: not a feature map a layer can be
        names = [_REUSE_SUFFIX.sub("", scope) for scope in node.meta.get("nn_module_stack", {})]
        names += [str(node.target)] if node.op == "call_module" else []
        if rf is None:
            if hw is not None:  # a container whose last feature map is unknown is unknown
                for name in names:
                    out.pop(name, None)
                    unknown.pop(name, None)
                    if node in why:
                        unknown[name] = why[node]
            continue
        # Later nodes overwrite earlier ones: a reused module, and a container, get the geometry
        # of the last node executed inside them (graph order is execution order).
        for name in names:
            out[name] = rf
            unknown.pop(name, None)
    return out, unknown


def _hook_fields(model: nn.Module, input_size: tuple[int, int]) -> Traced:
    """Fallback: thread one geometry through leaf modules in call order (sequential model)."""
    state: dict[str, ReceptiveField | None] = {"rf": _IDENTITY}
    out: dict[str, ReceptiveField] = {}
    unknown: dict[str, str] = {}
    after: list[str] = []  # the first normalisation over the whole feature map, once met
    leaves = {m for m in model.modules() if not list(m.children())}

    def hook(name: str, module: nn.Module):
        def fn(mod: nn.Module, args: tuple, output: object) -> None:
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                return
            if mod in leaves and state["rf"] is not None and args \
                    and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
                if module_spans(mod, 4):
                    after.append(f"{type(mod).__name__} ({name})")
                    state["rf"] = None
                else:
                    state["rf"] = _module_rf(mod, state["rf"], args[0].shape[2:],
                                             output.shape[2:])
            if state["rf"] is not None:
                out[name] = state["rf"]
            elif after:
                unknown[name] = after[0]
        return fn

    handles = [m.register_forward_hook(hook(n, m)) for n, m in model.named_modules() if n]
    try:
        with evaluating(model):
            model(blank_image(model, input_size))
    finally:
        for h in handles:
            h.remove()
    return out, unknown


def traced_fields(model: nn.Module, input_size: tuple[int, int]) -> Traced:
    """`receptive_fields`, and for the feature-map modules left out because they come after a
    normalisation whose statistics span the whole feature map (GroupNorm, InstanceNorm,
    LayerNorm over H and W, ...: see `pipeline.interp.spatial`), that normalisation, as
    "GroupNorm (gn1)" or "group_norm (in block)"."""
    try:
        return _fx_fields(model, input_size)
    except Exception as error:  # fx cannot trace data-dependent control flow: hooks instead
        if out_of_memory(error):  # not a reason to run the model again
            raise
        return _hook_fields(model, input_size)


def receptive_fields(
    model: nn.Module, input_size: tuple[int, int]
) -> dict[str, ReceptiveField]:
    """Receptive field of every module (dotted name) whose output is a 4-D feature map.

    Traced with torch.fx (geometry united at merges; reused modules report their last call);
    falls back to forward hooks in call order when tracing fails (sequential assumption).
    Modules whose geometry is not a regular grid (e.g. adaptive pooling with irregular bins, and
    everything after it) are omitted, and so are the units after a squeeze-and-excitation gate
    or a normalisation over the whole feature map: each of them sees the whole image.
    """
    return traced_fields(model, input_size)[0]


def module_call_counts(model: nn.Module) -> dict[str, int] | None:
    """How often each module is called in one forward pass (from fx); None if untraceable.
    A container's calls are its scopes in the nodes' module stacks (``act``, ``act@1``, ...).

    Used by the projector to record a reused module's LAST call, consistent with
    `receptive_fields`.
    """
    try:
        with evaluating(model):  # the calls of an eval-mode forward, the projector's
            gm = fx.symbolic_trace(model)
    except Exception:  # untraceable model: caller decides
        return None
    counts: dict[str, int] = {}
    scopes: dict[str, set[str]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
        for scope in node.meta.get("nn_module_stack", {}):
            scopes.setdefault(_REUSE_SUFFIX.sub("", scope), set()).add(scope)
    for name, calls in scopes.items():
        counts[name] = max(counts.get(name, 0), len(calls))
    return counts


def clip_box(box: Box, image_hw: tuple[int, int]) -> tuple[Box, Box]:
    """Clip `box` to the image; returns (clipped_box, (cut_top, cut_left, cut_bottom, cut_right))
    where each cut is how many box rows/cols lay outside the image on that side."""
    top, left, bottom, right = box
    h, w = image_hw
    clipped = (max(top, 0), max(left, 0), min(bottom, h), min(right, w))
    cut = (clipped[0] - top, clipped[1] - left, bottom - clipped[2], right - clipped[3])
    return clipped, cut


def field_tile(
    array_hwc: np.ndarray, box: Box, tile_hw: tuple[int, int], pad_value: float | Sequence[float]
) -> np.ndarray:
    """SheetCell `box` from an (H, W[, C]) array into a tile of exactly `tile_hw`.

    Rule, per dimension, with tile = min(box size, image size) (`ReceptiveField.tile_hw`):
    - box no larger than the image: crop box ∩ image and fill the part of the box outside the
      image with `pad_value` on the side where it was clipped, so the unit's field keeps its
      position inside the tile (a unit at the top edge shows padding above the image);
    - box larger than the image: the tile is the whole image along that dimension (no padding);
      the box then covers everything the unit can see anyway.
    The rule depends only on the box and the image size, so an image patch and the projection of
    the same unit (same H, W) crop identically and align pixel for pixel.
    """
    (source_y, source_x), (tile_y, tile_x) = field_crop(array_hwc.shape[:2], box, tile_hw)
    tile = np.empty((*tile_hw, *array_hwc.shape[2:]), dtype=array_hwc.dtype)
    tile[...] = np.asarray(pad_value, dtype=array_hwc.dtype)
    tile[tile_y, tile_x] = array_hwc[source_y, source_x]
    return tile


def field_crop(image_hw: tuple[int, int], box: Box, tile_hw: tuple[int, int]
               ) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Where :func:`field_tile` copies from and to: ((rows, columns) of the image, (rows,
    columns) of the tile), empty slices when the box misses the image."""
    h, w = image_hw
    (ct, cl, cb, cr), (pt, pl, pb, pr) = clip_box(box, (h, w))
    if box[2] - box[0] > h:
        ct, cb, pt, pb = 0, h, 0, 0
    if box[3] - box[1] > w:
        cl, cr, pl, pr = 0, w, 0, 0
    if (cb - ct + pt + pb, cr - cl + pl + pr) != tuple(tile_hw):
        raise ValueError(
            f"box {box} on a {h}x{w} image gives a {cb - ct + pt + pb}x{cr - cl + pl + pr} tile,"
            f" not {tile_hw}; pass tile_hw = ReceptiveField.tile_hw(image_hw)"
        )
    rows, columns = max(0, cb - ct), max(0, cr - cl)
    return ((slice(ct, ct + rows), slice(cl, cl + columns)),
            (slice(pt, pt + rows), slice(pl, pl + columns)))
