"""Max pooling's values as shifted maxima: what ``F.max_pool2d`` gives, 5-10x faster on a CPU.

Torch's CPU kernel for max pooling in the NCHW layout walks each window of each plane on its
own; measured on 2 cores (3 x 3, stride 2, the maps of AlexNet and VGG16's shapes) it takes
5-10x the time of the same pooling written as ``k_h + k_w - 2`` elementwise maxima of strided
views of the map: first over the rows of each window, then over its columns. Max is exact, so
the values are the same numbers (NaN propagates in both; of two equal zeros of opposite sign
either may come out). Occlusion's incremental inference pools a window of every position's map
at every pooling layer, where the kernel was a tenth of the stage's time.

Values only, without autograd: the gradient of ``torch.maximum`` splits ties between its
operands, where max pooling routes the whole signal through its switch (the first maximum), so
anything that differentiates the pooling, or asks for the switches, or runs on another device
(where the library's kernels are fast), gets ``F.max_pool2d`` itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def max_pool_values(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int] = (1, 1)) -> Tensor:
    """``F.max_pool2d(x, kernel, stride, 0, dilation)``, unpadded and in floor mode, on a
    ``[..., H, W]`` map; by shifted maxima where that gives the same values (module doc)."""
    if x.dim() < 3 or x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
        return F.max_pool2d(x, kernel, stride, 0, dilation)
    (kh, kw), (sy, sx), (dy, dx) = kernel, stride, dilation
    height, width = x.shape[-2:]
    out_h = (height - dy * (kh - 1) - 1) // sy + 1
    out_w = (width - dx * (kw - 1) - 1) // sx + 1
    if out_h <= 0 or out_w <= 0:  # the window does not fit: the library's error
        return F.max_pool2d(x, kernel, stride, 0, dilation)
    rows = _shifted_max(x, -2, kh, sy, dy, out_h)
    # a new contiguous tensor, as F.max_pool2d's (a 1-wide kernel leaves a strided view)
    return _shifted_max(rows, -1, kw, sx, dx, out_w).contiguous()


def _shifted_max(x: Tensor, dim: int, taps: int, step: int, spacing: int, out: int) -> Tensor:
    """The maximum over ``taps`` views of ``x`` along ``dim``, each ``out`` long with stride
    ``step``, shifted by ``spacing`` from the one before."""
    last = step * (out - 1) + 1
    result = x.narrow(dim, 0, last)[_every(dim, step)]
    for tap in range(1, taps):
        result = torch.maximum(result, x.narrow(dim, tap * spacing, last)[_every(dim, step)])
    return result


def _every(dim: int, step: int) -> tuple:
    """The index that takes every ``step``-th element along ``dim`` (-2 or -1)."""
    return (Ellipsis, slice(None, None, step)) + ((slice(None),) if dim == -2 else ())
