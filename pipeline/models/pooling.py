"""Max pooling's values as shifted maxima: what ``F.max_pool2d`` gives, 3-7x faster on a CPU.

Torch's CPU kernel for max pooling in the NCHW layout walks each window of each plane on its
own. The same pooling written as ``k_h + k_w - 2`` elementwise maxima of strided views of the
map (first over the rows of each window, then over its columns, each into one buffer) gives the
same numbers, measured on 2 cores:

====================================  ==========  ==============
map (batch of 256), 3 x 3, stride 2   torch       shifted maxima
====================================  ==========  ==============
AlexNet pool1 ``[64, 55, 55]``        235 ms      87 ms
AlexNet pool2 ``[192, 27, 27]``       168 ms      56 ms
AlexNet pool5 ``[256, 13, 13]``       44 ms       6 ms
====================================  ==========  ==============

(VGG16's first 2 x 2 pooling, a batch of 64 ``[64, 224, 224]``: 714 ms and 261 ms.) Max is
exact, so the values are the same numbers: NaN propagates in both; of two equal zeros of
opposite sign either may come out. Padding is the explicit -inf that max pooling means, and
ceil mode's extra windows are the ones torch's own output size allows.

Used where only values are needed, on a CPU: occlusion's incremental inference pools a window
of every position's map (:mod:`pipeline.interp.regions`), and the passes that only read a
model's outputs (the activations stage's inference, above all) run under
:func:`shifted_max_pooling`, which answers a model's ``max_pool2d`` calls this way. Anything
that differentiates the pooling (the gradient of ``torch.maximum`` splits ties between its
operands, where max pooling routes the whole signal through its switch, the first maximum), asks
for the switches, or runs on another device (where the library's kernels are fast) gets
``F.max_pool2d`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


def max_pool_values(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int] = (1, 1), *, padding: tuple[int, int] = (0, 0),
                    ceil_mode: bool = False) -> Tensor:
    """``F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)`` on a ``[C, H, W]`` or
    ``[N, C, H, W]`` map (note the order: dilation before the keyword-only padding); by shifted
    maxima where that gives the same values (module doc)."""
    if not (_shifts_apply(x) and min(*kernel, *stride, *dilation) >= 1 and min(padding) >= 0):
        return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    (kh, kw), (sy, sx), (dy, dx), (py, px) = kernel, stride, dilation, padding
    height, width = x.shape[-2:]
    out_h = _output_size(height, kh, sy, py, dy, ceil_mode)
    out_w = _output_size(width, kw, sx, px, dx, ceil_mode)
    if out_h <= 0 or out_w <= 0 or 2 * py > kh or 2 * px > kw:
        # the window does not fit, or the padding is more than half of it: the library's error
        return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    # the windows past the end (padding, ceil mode) read -inf, as max pooling's padding is
    bottom = max(0, (out_h - 1) * sy + dy * (kh - 1) + 1 - height - py)
    right = max(0, (out_w - 1) * sx + dx * (kw - 1) + 1 - width - px)
    layout = torch.channels_last if channels_last(x) else torch.contiguous_format
    if py or px or bottom or right:
        x = F.pad(x, (px, right, py, bottom), value=-math.inf)
    rows = _shifted_max(x, -2, kh, sy, dy, out_h)
    pooled = _shifted_max(rows, -1, kw, sx, dx, out_w)
    # a new contiguous tensor in the input's layout, as F.max_pool2d's: a 1-wide kernel leaves a
    # strided view, and a 1 x 1 one with stride 1 the input itself (an in-place op after the
    # pooling must not change what it read)
    if pooled.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        return pooled.clone(memory_format=layout)
    return pooled.contiguous(memory_format=layout)


def _shifts_apply(x: Tensor) -> bool:
    """Values only (nothing differentiates them), of floating point, on a CPU."""
    return (x.dim() in (3, 4) and x.device.type == "cpu" and x.is_floating_point()
            and not (x.requires_grad and torch.is_grad_enabled()))


def _output_size(size: int, kernel: int, stride: int, pad: int, dilation: int,
                 ceil_mode: bool) -> int:
    """Torch's output length of a pooling (``pooling_output_shape``): in ceil mode a last
    window that would start in the right padding is dropped."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def channels_last(x: Tensor) -> bool:
    """Whether a 4-d map is laid out channels-last (and not also contiguous, as a map of one
    channel or of one pixel is both)."""
    return x.dim() == 4 and not x.is_contiguous() \
        and x.is_contiguous(memory_format=torch.channels_last)


def _shifted_max(x: Tensor, dim: int, taps: int, step: int, spacing: int, out: int) -> Tensor:
    """The maximum over ``taps`` views of ``x`` along ``dim``, each ``out`` long with stride
    ``step``, shifted by ``spacing`` from the one before: the first two into a new tensor, the
    rest into it in place (a new tensor per tap cost a third more)."""
    last = step * (out - 1) + 1

    def view(tap: int) -> Tensor:
        return x.narrow(dim, tap * spacing, last)[_every(dim, step)]

    if taps == 1:
        return view(0)
    result = torch.maximum(view(0), view(1))
    for tap in range(2, taps):
        torch.maximum(result, view(tap), out=result)
    return result


def _every(dim: int, step: int) -> tuple:
    """The index that takes every ``step``-th element along ``dim`` (-2 or -1)."""
    return (Ellipsis, slice(None, None, step)) + ((slice(None),) if dim == -2 else ())


# --------------------------------------------------------------------------------------------
# A model's own max pooling, answered by shifted maxima

_PARAMETERS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
               "return_indices")
# F.max_pool2d (what nn.MaxPool2d calls) and the op a model may call directly
_MAX_POOLS = {F.max_pool2d, torch.max_pool2d}


class _ShiftedMaxPooling(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MAX_POOLS:
            pooled = _pooled(args, kwargs)
            if pooled is not None:
                return pooled
        return func(*args, **kwargs)


def _pooled(args: tuple, kwargs: dict) -> Tensor | None:
    """A ``max_pool2d`` call's values by shifted maxima, or None where the library's kernel
    runs it (switches asked for, gradients, another device, arguments of another form)."""
    bound: dict[str, Any] = dict(zip(_PARAMETERS, args, strict=False))
    bound.update(kwargs)
    x = bound.get("input")
    if not isinstance(x, Tensor) or bound.get("return_indices") or not _shifts_apply(x):
        return None
    try:
        kernel = _pair(bound["kernel_size"])
        stride = bound.get("stride")
        stride = kernel if stride is None or (isinstance(stride, list | tuple) and not stride) \
            else _pair(stride)  # None or []: the kernel (0 is the library's error)
        padding = _pair(bound.get("padding", 0))
        dilation = _pair(bound.get("dilation", 1))
    except (KeyError, TypeError, ValueError):
        return None
    return max_pool_values(x, kernel, stride, dilation, padding=padding,
                           ceil_mode=bool(bound.get("ceil_mode")))


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = (value[0], value[0]) if len(value) == 1 else value
    return int(first), int(second)


@contextmanager
def shifted_max_pooling(device: torch.device | str = "cpu") -> Iterator[None]:
    """Inside (in this thread: a torch function mode), a model's max pooling on a CPU tensor
    that nothing differentiates is computed by shifted maxima (module doc): the same values,
    in a third of the time. For a pass on ``device``: on any other than a CPU nothing changes
    (and no torch call goes through the mode)."""
    if torch.device(device).type != "cpu":
        yield
        return
    with _ShiftedMaxPooling():
        yield
