"""An unpadded strided convolution whose input gradient is one stride-1 convolution.

The gradient of a strided convolution with respect to its input is a transposed convolution,
and the CPU kernels compute it three to four times slower than the forward pass: for AlexNet's
first layer (11 x 11, stride 4) it was a quarter of a conv5 projection's time. Split by the
phase of each input pixel modulo the stride, the same sum is an ordinary convolution of the
output gradient with ``C_in * s * s`` filters of ``ceil(k / s)`` taps (one per phase), whose
outputs a pixel shuffle interleaves back into the input's grid. Same products, summed in
another order: equal to autograd's gradient up to float32 rounding.

Only the input's gradient flows (the weights are constants here: the projector's cones
differentiate with respect to the image alone), and only for unpadded, undilated, ungrouped
convolutions, the form the cones run each window in (:mod:`pipeline.interp.regions`);
anything else is ``F.conv2d`` as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def conv2d_unpadded(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                    dilation: tuple[int, int], groups: int) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, 0, dilation, groups)``; its gradient with respect
    to ``x`` by phases when the stride is above one and the rest allows it."""
    if (stride == (1, 1) or dilation != (1, 1) or groups != 1 or not x.requires_grad
            or not torch.is_grad_enabled()):
        return F.conv2d(x, weight, bias, stride, 0, dilation, groups)
    return _ByPhases.apply(x, weight.detach(), None if bias is None else bias.detach(), stride)


class _ByPhases(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None,  # type: ignore[override]
                stride: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.stride, ctx.size = stride, tuple(x.shape[2:])
        return F.conv2d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
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
