"""An unpadded strided convolution whose input gradient is one stride-1 convolution.

The gradient of a strided convolution with respect to its input is a transposed convolution,
and where the input is an image's few channels the CPU kernels compute it three to four times
slower than the forward pass: for AlexNet's first layer (11 x 11, stride 4) it was a quarter of
a conv5 projection's time. Split by the
phase of each input pixel modulo the stride, the same sum is an ordinary convolution of the
output gradient with ``C_in * s * s`` filters of ``ceil(k / s)`` taps (one per phase), whose
outputs a pixel shuffle interleaves back into the input's grid. Same products, summed in
another order: equal to autograd's gradient up to float32 rounding.

Only where it pays: measured on 2 CPU cores (batch 32, the backward alone), by phases against
autograd's own, for an image's 3 channels: 11 x 11 stride 4 2.3x faster, 7 x 7 stride 2 2.4x,
4 x 4 stride 4 2.1x, but 5 x 5 stride 2 0.67x and 3 x 3 stride 2 0.32x (the phases' filters
hold ``s * s * ceil(k / s) ** 2`` taps against ``k * k``: 1.19, 1.31, 1.0, 1.44 and 1.78
times the work); with 64 to 256 input channels it never paid (7 x 7 stride 2 0.97x, 3 x 3
stride 2 0.55x, 1 x 1 stride 2 0.5x, 4 x 4 stride 4 0.13x). So: a CPU, at most :data:`MAX_CHANNELS`
input channels, at most :data:`MAX_EXTRA` times the work. A fixed rule, not a timing taken
at run time, so the same run always gives the same rounding (a resumed stage's arrays equal
an uninterrupted one's).

Only the input's gradient flows: ``apply`` of a window (:mod:`pipeline.interp.regions`) is
differentiable with respect to its input alone, the weights are constants (the projector's
cones differentiate with respect to the image). Only unpadded, undilated, ungrouped
convolutions, the form the cones run each window in; anything else is ``F.conv2d`` as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_CHANNELS = 4  # an image's channels: where the CPU's transposed convolution is slow
MAX_EXTRA = 1.35  # the phases' taps over the kernel's


def conv2d_unpadded(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                    dilation: tuple[int, int], groups: int) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, 0, dilation, groups)``; its gradient with respect
    to ``x`` by phases where that pays (:func:`by_phases`)."""
    stride, dilation = (int(stride[0]), int(stride[1])), (int(dilation[0]), int(dilation[1]))
    if not (by_phases(weight.shape, stride, x.device) and dilation == (1, 1) and groups == 1
            and x.requires_grad and torch.is_grad_enabled()):
        return F.conv2d(x, weight, bias, stride, 0, dilation, groups)
    return _ByPhases.apply(x, weight.detach(), None if bias is None else bias.detach(), stride)


def by_phases(shape: Sequence[int], stride: tuple[int, int], device: torch.device) -> bool:
    """Whether an ungrouped convolution of weight ``shape`` and ``stride`` gets its input
    gradient by phases: measured faster only on a CPU, for few input channels and little
    extra work (module doc)."""
    _, in_c, kh, kw = shape
    sy, sx = stride
    if device.type != "cpu" or stride == (1, 1) or in_c > MAX_CHANNELS:
        return False
    taps = sy * sx * -(-kh // sy) * -(-kw // sx)
    return taps <= MAX_EXTRA * kh * kw


class _ByPhases(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None,
                stride: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.stride, ctx.size = stride, tuple(x.shape[2:])
        return F.conv2d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        return input_gradient(grad, weight, ctx.stride, ctx.size), None, None, None


def input_gradient(grad: Tensor, weight: Tensor, stride: tuple[int, int],
                   size: tuple[int, int]) -> Tensor:
    """The gradient ``[N, C_in, *size]`` of an unpadded convolution's input, given its
    output's ``grad`` ``[N, C_out, h, w]``: input pixel ``s * q + r`` (r the phase) receives
    the taps ``r + s * t`` of the outputs ``q - t``, a full convolution over q."""
    (sy, sx), (out_c, in_c, kh, kw) = stride, weight.shape
    th, tw = -(-kh // sy), -(-kw // sx)  # taps per phase
    padded = F.pad(weight, (0, sx * tw - kw, 0, sy * th - kh))  # missing taps are zero
    taps = padded.reshape(out_c, in_c, th, sy, tw, sx).flip(2, 4)
    filters = taps.permute(1, 3, 5, 0, 2, 4).reshape(in_c * sy * sx, out_c, th, tw)
    phased = F.conv2d(grad, filters.to(grad.dtype), padding=(th - 1, tw - 1))
    full = _unshuffle(phased, in_c, sy, sx)  # [N, C_in, sy * (h + th - 1), sx * (w + tw - 1)]
    height, width = size
    short_h, short_w = max(0, height - full.shape[2]), max(0, width - full.shape[3])
    if short_h or short_w:  # input rows past the last window: no output read them
        full = F.pad(full, (0, short_w, 0, short_h))
    return full[:, :, :height, :width]


def _unshuffle(phased: Tensor, channels: int, sy: int, sx: int) -> Tensor:
    """Channels ``(c, ry, rx)`` at grid ``(q, p)`` to pixel ``(sy * q + ry, sx * p + rx)``
    (``F.pixel_shuffle`` where both strides are equal)."""
    n, _, h, w = phased.shape
    if sy == sx:
        return F.pixel_shuffle(phased, sy)
    return phased.reshape(n, channels, sy, sx, h, w).permute(0, 1, 4, 2, 5, 3) \
        .reshape(n, channels, h * sy, w * sx)
