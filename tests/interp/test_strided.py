"""The strided convolution's input gradient by phases equals autograd's own, and is used only
where the rule says it pays."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.interp.strided import by_phases, conv2d_unpadded, input_gradient


@pytest.mark.parametrize(("kernel", "stride", "size"), [
    ((11, 11), (4, 4), (67, 67)),   # AlexNet's first layer, a cone's crop
    ((11, 11), (4, 4), (70, 69)),   # rows and columns past the last window
    ((7, 7), (2, 2), (31, 31)),     # ResNet's stem
    ((3, 3), (2, 2), (16, 16)),     # kernel not a multiple of the stride
    ((2, 2), (2, 2), (8, 8)),       # kernel equal to the stride (patches)
    ((2, 2), (3, 3), (11, 11)),     # kernel smaller than the stride: phases without taps
    ((5, 3), (3, 2), (20, 17)),     # unequal strides and kernels
    ((3, 3), (1, 2), (9, 12)),      # a stride of one along one axis
    ((1, 1), (2, 2), (9, 9)),       # a downsampling 1 x 1
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_by_phases_equals_autograd(kernel, stride, size, dtype):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 3, *kernel, generator=generator).to(dtype)
    x = torch.randn(17, 3, *size, generator=generator).to(dtype).requires_grad_(True)
    out = F.conv2d(x, weight, None, stride)
    seed = torch.randn(out.shape, generator=generator).to(dtype)
    (want,) = torch.autograd.grad(out, x, seed)
    got = input_gradient(seed, weight, stride, size)
    assert got.shape == want.shape and got.dtype == want.dtype
    tolerance = (1e-5 if dtype == torch.float32 else 1e-12) * float(want.abs().max())
    torch.testing.assert_close(got, want, atol=tolerance, rtol=0)


def test_conv2d_unpadded_by_phases_where_the_rule_says():
    """AlexNet's conv1 goes by phases (same output, same gradient within rounding); a
    3 x 3 stride-2 on an image, or anything on 64 channels, stays autograd's."""
    generator = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(8, 3, 11, 11, generator=generator), torch.randn(8)
    x = torch.randn(2, 3, 67, 67, generator=generator, requires_grad=True)
    out = conv2d_unpadded(x, weight, bias, (4, 4), (1, 1), 1)
    assert "ByPhases" in type(out.grad_fn).__name__
    expected = F.conv2d(x, weight, bias, 4)
    torch.testing.assert_close(out, expected)
    seed = torch.randn(out.shape, generator=generator)
    (got,) = torch.autograd.grad(out, x, seed)
    (want,) = torch.autograd.grad(expected, x, seed)
    torch.testing.assert_close(got, want, atol=1e-5 * float(want.abs().max()), rtol=0)

    assert by_phases((64, 3, 11, 11), (4, 4), torch.device("cpu"))
    assert by_phases((64, 3, 7, 7), (2, 2), torch.device("cpu"))
    assert not by_phases((64, 3, 3, 3), (2, 2), torch.device("cpu"))  # 1.78x the work
    assert not by_phases((64, 64, 7, 7), (2, 2), torch.device("cpu"))  # never paid there
    assert not by_phases((64, 3, 11, 11), (1, 1), torch.device("cpu"))
    assert not by_phases((64, 3, 11, 11), (4, 4), torch.device("meta"))  # measured on CPUs


def test_other_convolutions_are_left_to_autograd():
    """Grouped, dilated, stride-1 or many-channel convolutions, and calls without a
    gradient, are F.conv2d itself (no custom backward in the graph)."""
    x = torch.randn(1, 3, 24, 24, requires_grad=True)
    for weight, stride, dilation, groups in [
            (torch.randn(3, 1, 7, 7), (2, 2), (1, 1), 3),
            (torch.randn(4, 3, 7, 7), (2, 2), (2, 2), 1),
            (torch.randn(4, 3, 7, 7), (1, 1), (1, 1), 1),
            (torch.randn(4, 3, 3, 3), (2, 2), (1, 1), 1)]:
        out = conv2d_unpadded(x, weight, None, stride, dilation, groups)
        assert "ByPhases" not in type(out.grad_fn).__name__
    with torch.no_grad():
        assert conv2d_unpadded(x, torch.randn(4, 3, 7, 7), None, (2, 2), (1, 1), 1).grad_fn \
            is None


def test_weights_are_constants():
    """``apply`` of a window is differentiable with respect to its input alone: asking for
    the weight's gradient through the phases is an error, not a silent zero."""
    weight = torch.randn(4, 3, 7, 7, requires_grad=True)
    out = conv2d_unpadded(torch.randn(1, 3, 15, 15, requires_grad=True), weight, None, (2, 2),
                          (1, 1), 1)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(out.sum(), weight)
