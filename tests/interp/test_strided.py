"""The strided convolution's input gradient by phases equals autograd's own."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.interp.strided import conv2d_unpadded


@pytest.mark.parametrize(("kernel", "stride", "size"), [
    ((11, 11), (4, 4), (67, 67)),   # AlexNet's first layer, a cone's crop
    ((11, 11), (4, 4), (70, 69)),   # rows and columns past the last window
    ((7, 7), (2, 2), (31, 31)),     # ResNet's stem
    ((3, 3), (2, 2), (16, 16)),     # kernel not a multiple of the stride... and smaller ones
    ((2, 2), (2, 2), (8, 8)),
    ((5, 3), (3, 2), (20, 17)),     # unequal strides and kernels
    ((1, 1), (2, 2), (9, 9)),       # a downsampling 1 x 1 (taps missing in most phases)
])
def test_gradient_by_phases_equals_autograd(kernel, stride, size):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 3, *kernel, generator=generator)
    bias = torch.randn(6, generator=generator)
    x = torch.randn(2, 3, *size, generator=generator, requires_grad=True)
    expected = F.conv2d(x, weight, bias, stride)
    seed = torch.randn(expected.shape, generator=generator)
    (want,) = torch.autograd.grad(expected, x, seed)
    got_out = conv2d_unpadded(x, weight, bias, stride, (1, 1), 1)
    (got,) = torch.autograd.grad(got_out, x, seed)
    assert torch.equal(got_out, expected)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5 * float(want.abs().max()))


def test_other_convolutions_are_left_to_autograd():
    """Grouped, dilated or stride-1 convolutions, and calls without a gradient, are
    F.conv2d itself (no custom backward in the graph)."""
    x = torch.randn(1, 4, 12, 12, requires_grad=True)
    for weight, stride, dilation, groups in [
            (torch.randn(4, 1, 3, 3), (2, 2), (1, 1), 4),
            (torch.randn(4, 4, 3, 3), (2, 2), (2, 2), 1),
            (torch.randn(4, 4, 3, 3), (1, 1), (1, 1), 1)]:
        out = conv2d_unpadded(x, weight, None, stride, dilation, groups)
        assert "ByPhases" not in type(out.grad_fn).__name__
    with torch.no_grad():
        assert conv2d_unpadded(x, torch.randn(4, 4, 3, 3), None, (2, 2), (1, 1), 1).grad_fn is None
    out = conv2d_unpadded(x, torch.randn(4, 4, 3, 3), None, (2, 2), (1, 1), 1)
    assert "ByPhases" in type(out.grad_fn).__name__
