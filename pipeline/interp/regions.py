"""Feature maps known only inside a box per batch item, and the ops that keep them so.

Two computations need, for a batch of items (occluder positions, projection requests), one
feature map per item that matters only inside a box: incremental occlusion
(:mod:`pipeline.experiments.incremental`: the box is what the square changed) and the
projector's cones (:mod:`pipeline.interp.cones`: the box is what one unit reads). Both walk the
model's ``torch.fx`` graph and hold such a map as a :class:`Region`: a patch of one size for
the whole batch, each item's at its own offset, over a map that is known elsewhere (the
unoccluded one) or never read there. What this module gives them:

- :func:`window_of_module` / :func:`window_of_function`: a convolution or pooling window's
  geometry and the op itself with no padding, so that it can run on gathered windows padded
  explicitly as the op pads (zeros, or -inf for max pooling) and give the full map's numbers;
- :func:`elementwise`: the ops that act position by position (activations, eval-mode batch
  norm, LRN, dropout, arithmetic, concatenation of channels), which run on patches as they are;
- :func:`gather`: each item's window of a region, the rest from a map known everywhere;
- :func:`run_node`: a node's op on given values, out of place (:class:`out_of_place`): a patch
  must not be overwritten by the op that reads it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from pipeline.interp.strided import conv2d_unpadded
from pipeline.models.pooling import channels_last, max_pool_values

# A box per position, in the map's own coordinates: (top, bottom, left, right), bottom and right
# exclusive; empty when top >= bottom or left >= right.
Box = tuple[int, int, int, int]

_ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.LocalResponseNorm)
_ELEMENTWISE_FUNCTIONS: set[Any] = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div, torch.relu, torch.sigmoid, torch.tanh,
    torch.clamp, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.dropout, F.sigmoid, F.tanh}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "sub", "mul", "div", "clamp",
                        "contiguous", "clone"}
_OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul}


@dataclass(frozen=True)
class Window:
    """A sliding window along H and W: extent of the (dilated) kernel, stride, padding before
    the first row/column, the value the op pads with, and the op itself with no padding."""

    extent: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    fill: float
    apply: Callable[[Tensor], Tensor]


@dataclass
class Region:
    """A batch of maps that equal ``clean`` ``[1, C, H, W]`` except inside each position's
    patch: ``patch`` ``[n, C, h, w]`` at ``(tops[i], lefts[i])``; ``changed[i]`` is the box
    of position i that really differs (inside its patch)."""

    clean: Tensor
    patch: Tensor
    tops: list[int]
    lefts: list[int]
    changed: list[Box]

    def full(self) -> Tensor:
        """The maps laid out in full, ``[n, C, H, W]``."""
        n, (height, width) = len(self.tops), self.clean.shape[2:]
        return gather(self, self.clean, [0] * n, [0] * n, height, width).contiguous()

    def channel(self, unit: int) -> Region:
        """The same maps, of one channel."""
        return Region(self.clean[:, unit:unit + 1], self.patch[:, unit:unit + 1], self.tops,
                      self.lefts, self.changed)

    def whole(self) -> bool:
        return tuple(self.patch.shape[2:]) == tuple(self.clean.shape[2:])


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def window_of_module(module: nn.Module) -> Window | None:
    """The window of a convolution or pooling module, None when it is not one this module can
    run on a region (string or non-zero padding modes, pooling that divides by a count that
    depends on the border)."""
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return None
        kernel, dilation = pair(module.kernel_size), pair(module.dilation)
        conv = module
        padding = pair(conv.padding)  # type: ignore[arg-type]  # not a string: checked above
        return Window(_extent(kernel, dilation), pair(conv.stride), padding, 0.0,
                      lambda x: conv2d_unpadded(x, conv.weight, conv.bias, pair(conv.stride),
                                                pair(conv.dilation), conv.groups))
    if isinstance(module, nn.MaxPool2d) and not module.return_indices:
        return _max_pool(module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, nn.AvgPool2d):
        return _avg_pool(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                         module.count_include_pad, module.divisor_override)
    return None


def _extent(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    return (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)


def _max_pool(kernel_size, stride, padding, dilation=1) -> Window:
    """Max pooling pads with -inf; ceil mode only adds windows that run past the end, which
    the -inf padding of the gathered windows reproduces."""
    kernel, dilation = pair(kernel_size), pair(dilation)
    step = pair(stride) if stride else kernel
    # values by shifted maxima where nothing differentiates them (occlusion; pooling.py)
    return Window(_extent(kernel, dilation), step, pair(padding), -math.inf,
                  lambda x: max_pool_values(x, kernel, step, dilation))


def _avg_pool(kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override) -> Window | None:
    kernel, pad = pair(kernel_size), pair(padding)
    step = pair(stride) if stride else kernel
    if ceil_mode or (any(pad) and not count_include_pad):
        return None  # the divisor depends on where the window is: not a local function
    return Window(kernel, step, pad, 0.0,
                  lambda x: F.avg_pool2d(x, kernel, step, 0, divisor_override=divisor_override))


def window_of_function(node: fx.Node, value: Callable[[Any], Any]) -> Window | None:
    """The window of a functional ``conv2d``, ``max_pool2d`` or ``avg_pool2d`` call."""
    name = getattr(node.target, "__name__", "")
    if name not in ("conv2d", "max_pool2d", "avg_pool2d", "boolean_dispatch"):
        return None
    args = [value(a) for a in node.args]
    kwargs = {k: value(v) for k, v in node.kwargs.items()}
    try:
        if node.target is F.conv2d or name == "conv2d":
            bound = _bind(["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
                          args, kwargs, {"bias": None, "stride": 1, "padding": 0, "dilation": 1,
                                         "groups": 1})
            if isinstance(bound["padding"], str):
                return None
            weight, bias = bound["weight"], bound["bias"]
            if not isinstance(weight, Tensor) or not isinstance(bias, Tensor | None):
                return None  # computed from the parameters at run time: not known here
            stride, dilation, groups = bound["stride"], bound["dilation"], bound["groups"]
            kernel = (int(weight.shape[2]), int(weight.shape[3]))
            return Window(_extent(kernel, pair(dilation)), pair(stride),
                          pair(bound["padding"]), 0.0,
                          lambda x: conv2d_unpadded(x, weight, bias, pair(stride),
                                                    pair(dilation), groups))
        if node.target is F.max_pool2d or name in ("max_pool2d", "boolean_dispatch"):
            bound = _bind(["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                           "return_indices"], args, kwargs,
                          {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                           "return_indices": False})
            if bound["return_indices"]:
                return None
            return _max_pool(bound["kernel_size"], bound["stride"], bound["padding"],
                             bound["dilation"])
        bound = _bind(["input", "kernel_size", "stride", "padding", "ceil_mode",
                       "count_include_pad", "divisor_override"], args, kwargs,
                      {"stride": None, "padding": 0, "ceil_mode": False,
                       "count_include_pad": True, "divisor_override": None})
        return _avg_pool(bound["kernel_size"], bound["stride"], bound["padding"],
                         bound["ceil_mode"], bound["count_include_pad"],
                         bound["divisor_override"])
    except (KeyError, TypeError, IndexError):
        return None


def _bind(names: list[str], args: list, kwargs: dict, defaults: dict) -> dict:
    bound = dict(defaults)
    bound.update(zip(names, args, strict=False))
    bound.update(kwargs)
    missing = [n for n in names if n not in bound]
    if missing:
        raise KeyError(missing[0])
    return bound


def span(changed: tuple[int, int], window: Window, axis: int, length: int) -> tuple[int, int]:
    """[lo, hi) of the outputs (of ``length``) whose window overlaps the changed [a, b)."""
    a, b = changed
    if a >= b:
        return 0, 0
    k, s, p = window.extent[axis], window.stride[axis], window.padding[axis]
    lo = max(0, -((k - 1 - a - p) // s))  # ceil((a + p - k + 1) / s)
    hi = min(length, (b - 1 + p) // s + 1)
    return (lo, hi) if lo < hi else (0, 0)


def placed(spans: list[tuple[int, int]], length: int) -> tuple[int, list[int]]:
    """One patch size for every position's [lo, hi) and each one's offset, inside the map."""
    size = max(1, min(length, max(hi - lo for lo, hi in spans)))
    return size, [min(max(0, lo), length - size) for lo, _ in spans]


def scopes(node: fx.Node) -> set[str]:
    """The modules a node belongs to: its own (a module call) and its enclosing containers."""
    from pipeline.interp.receptive_field import _REUSE_SUFFIX

    names = {_REUSE_SUFFIX.sub("", scope) for scope in node.meta.get("nn_module_stack", {})}
    if node.op == "call_module":
        names.add(str(node.target))
    return names


class out_of_place:
    """Run every module that could work in place out of place for the block (a patch or an
    unoccluded map must not be overwritten by the op that reads it), then restore them."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.flags = {m: m.inplace for m in gm.modules()
                      if isinstance(getattr(m, "inplace", None), bool)}

    def __enter__(self) -> None:
        for module in self.flags:
            module.inplace = False  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        for module, flag in self.flags.items():
            module.inplace = flag


def run_node(gm: fx.GraphModule, node: fx.Node, value: Callable[[fx.Node], Any]) -> Any:
    """A node's op on its inputs' values, out of place."""
    args = fx.node.map_arg(node.args, value)
    kwargs = dict(fx.node.map_arg(node.kwargs, value))
    if "inplace" in kwargs:
        kwargs["inplace"] = False
    if node.op == "get_attr":
        target: Any = gm
        for part in str(node.target).split("."):
            target = getattr(target, part)
        return target
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_function":
        function: Any = node.target
        return _OUT_OF_PLACE.get(function, function)(*args, **kwargs)
    if node.op == "call_method":
        name = str(node.target)
        if name.endswith("_") and hasattr(args[0], name[:-1]):
            name = name[:-1]
        return getattr(args[0], name)(*args[1:], **kwargs)
    raise ValueError(f"cannot run node {node.op} {node.target}")


def elementwise(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if isinstance(module, nn.BatchNorm2d):
            return module.running_mean is not None and not module.training
        if type(module).__name__ == "FrozenBatchNorm2d":
            return True
        return isinstance(module, _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        if node.target is torch.cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            return dim in (1, -3)
        return node.target in _ELEMENTWISE_FUNCTIONS
    if node.op == "call_method":
        return str(node.target).rstrip("_") in _ELEMENTWISE_METHODS
    return False


def union(boxes: list[Box]) -> Box:
    real = [b for b in boxes if b[0] < b[1] and b[2] < b[3]]
    if not real:
        return (0, 0, 0, 0)
    return (min(b[0] for b in real), max(b[1] for b in real),
            min(b[2] for b in real), max(b[3] for b in real))


def gather(value: Any, clean: Tensor, tops: list[int], lefts: list[int], h: int,
            w: int, source: Tensor | None = None, offset: tuple[int, int] = (0, 0)) -> Tensor:
    """``[n, C, h, w]``: each position's map at rows ``tops[i]:+h`` and columns
    ``lefts[i]:+w`` (map coordinates); ``source`` is the unoccluded map padded by ``offset``
    (top, left) when the windows reach into the padding, else ``clean``."""
    source = clean if source is None else source
    n, (oy, ox) = len(tops), offset
    out = _empty(source, (n, source.shape[1], h, w))
    with one_thread():
        for i in range(n):
            out[i] = source[0, :, tops[i] + oy:tops[i] + oy + h, lefts[i] + ox:lefts[i] + ox + w]
        if isinstance(value, Region):
            ph, pw = value.patch.shape[2:]
            for i in range(n):
                y0, y1 = max(value.tops[i], tops[i]), min(value.tops[i] + ph, tops[i] + h)
                x0, x1 = max(value.lefts[i], lefts[i]), min(value.lefts[i] + pw, lefts[i] + w)
                if y0 < y1 and x0 < x1:
                    out[i, :, y0 - tops[i]:y1 - tops[i], x0 - lefts[i]:x1 - lefts[i]] = \
                        value.patch[i, :, y0 - value.tops[i]:y1 - value.tops[i],
                                    x0 - value.lefts[i]:x1 - value.lefts[i]]
    return out


def _empty(like: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    """An uninitialised ``[n, C, h, w]`` batch in ``like``'s layout (channels-last stays so:
    the convolutions that read it run on that layout)."""
    if channels_last(like):
        return like.new_empty((shape[0], shape[2], shape[3], shape[1])).permute(0, 3, 1, 2)
    return like.new_empty(shape)


@contextmanager
def one_thread() -> Iterator[None]:
    """Copy a batch's windows on one thread: each copy is small, and waking the other threads
    for each costs more than the copy (4-6x slower on 2 cores, far more when they are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(str(node.target))).__name__} ({node.target})"
    return str(getattr(node.target, "__name__", node.target))


