"""Max pooling by shifted maxima gives ``F.max_pool2d``'s values (padding and ceil mode
included), and leaves autograd, switches and other devices to it; under
``shifted_max_pooling`` a real model's pooling takes that path and gives the same outputs."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from pipeline.models.pooling import max_pool_values, shifted_max_pooling


@pytest.mark.parametrize("kernel,stride,dilation", [
    ((3, 3), (2, 2), (1, 1)),  # AlexNet
    ((2, 2), (2, 2), (1, 1)),  # VGG
    ((3, 2), (1, 3), (1, 1)),
    ((3, 3), (2, 1), (2, 2)),
    ((1, 1), (2, 2), (1, 1)),
    ((5, 5), (3, 3), (1, 2))])
def test_the_values_are_max_pooling_s_on_every_size_with_nan_and_infinities(kernel, stride,
                                                                              dilation):
    generator = torch.Generator().manual_seed(0)
    for height, width in itertools.product((5, 8, 13, 27), (5, 9, 13)):
        x = torch.randn(2, 3, height, width, generator=generator)
        x[0, 0, 1, 1], x[1, 2, -1, 0], x[0, 1] = float("nan"), float("-inf"), float("inf")
        try:
            expected = F.max_pool2d(x, kernel, stride, 0, dilation)
        except RuntimeError:  # the window does not fit: the same error either way
            with pytest.raises(RuntimeError):
                max_pool_values(x, kernel, stride, dilation)
            continue
        found = max_pool_values(x, kernel, stride, dilation)
        assert found.shape == expected.shape
        assert torch.equal(found.isnan(), expected.isnan())
        assert torch.equal(found.nan_to_num(nan=0.0), expected.nan_to_num(nan=0.0))


def test_a_differentiated_pooling_routes_the_whole_signal_through_the_first_maximum():
    """Ties (zeros after a ReLU are common): max pooling's switch takes the first maximum,
    where ``torch.maximum``'s gradient would split the signal between the tied inputs."""
    x = torch.zeros(1, 1, 3, 3, requires_grad=True)
    max_pool_values(x, (3, 3), (1, 1)).sum().backward()
    assert x.grad is not None
    assert x.grad.flatten().tolist() == [1.0] + [0.0] * 8


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", [
    ((3, 3), (2, 2), (1, 1), (1, 1), False),  # ResNet's stem
    ((3, 3), (2, 2), (0, 0), (1, 1), True),  # GoogLeNet, SqueezeNet
    ((3, 3), (1, 1), (1, 1), (1, 1), True),  # Inception's branch pooling
    ((2, 3), (2, 2), (1, 1), (2, 1), True),
    ((4, 4), (3, 3), (2, 1), (1, 1), True),
    ((5, 5), (2, 4), (2, 2), (1, 2), False)])
def test_padding_and_ceil_mode_give_max_pooling_s_values_and_shape(kernel, stride, padding,
                                                                   dilation, ceil_mode):
    """The padding is -inf (an input of -inf next to it stays -inf), and ceil mode keeps the
    last window exactly where torch's output size has it, on every size."""
    generator = torch.Generator().manual_seed(1)
    for height, width in itertools.product((4, 7, 13, 14), (5, 8, 27)):
        x = torch.randn(2, 3, height, width, generator=generator)
        x[0, 0, 0, 0], x[1, 1, -1, -1], x[0, 2, 1] = float("-inf"), float("nan"), float("inf")
        try:
            expected = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                max_pool_values(x, kernel, stride, dilation, padding=padding, ceil_mode=ceil_mode)
            continue
        found = max_pool_values(x, kernel, stride, dilation, padding=padding, ceil_mode=ceil_mode)
        assert found.shape == expected.shape
        assert torch.equal(found.isnan(), expected.isnan())
        assert torch.equal(found.nan_to_num(nan=0.0), expected.nan_to_num(nan=0.0))


def test_a_channels_last_map_stays_channels_last():
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    found = max_pool_values(x, (3, 3), (2, 2))
    assert found.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(found, F.max_pool2d(x, 3, 2))


class _Seen(TorchFunctionMode):
    """The torch functions that reach it (entered first, it sees what the modes above it pass
    on: the shifted maxima, or the library's pooling itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _pooling_net() -> nn.Module:
    """Every form a model pools with: the module (plain, padded, in ceil mode), the functional
    call, the op, and one that asks for its switches."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.pool = nn.MaxPool2d(3, 2, padding=1)
            self.ceil = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.switches = nn.MaxPool2d(2, 2, return_indices=True)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            x = self.ceil(self.pool(torch.relu(self.conv(x))))
            x = F.max_pool2d(x, kernel_size=2, stride=1)
            x = torch.max_pool2d(x, [2, 2], [], [1, 1], [1, 1], True)
            x, _ = self.switches(x)
            return self.head(x.amax(dim=(2, 3)))

    return Net().eval()


def test_under_the_mode_a_model_s_pooling_is_shifted_maxima_with_the_same_outputs():
    torch.manual_seed(0)
    model, x = _pooling_net(), torch.randn(4, 3, 37, 41)
    with torch.no_grad():
        expected = model(x)
        with _Seen() as seen, shifted_max_pooling():
            found = model(x)
    assert torch.equal(found, expected)
    # four poolings by maxima (none of them reaches the library's kernel); the one that asks
    # for its switches does
    assert "maximum" in seen.names
    assert [n for n in seen.names if "pool" in n] == ["max_pool2d_with_indices"]


def test_under_the_mode_a_pass_that_differentiates_keeps_the_library_s_pooling():
    model, x = _pooling_net(), torch.randn(2, 3, 20, 20, requires_grad=True)
    expected = torch.autograd.grad(model(x).sum(), x)[0]
    with _Seen() as seen, shifted_max_pooling():
        found = torch.autograd.grad(model(x).sum(), x)[0]
    assert "maximum" not in seen.names
    assert torch.equal(found, expected)


def test_a_torchvision_model_gives_the_same_outputs_under_the_mode():
    """GoogLeNet pools in ceil mode, with and without padding, in every inception block."""
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False,
                                         init_weights=False).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        expected = model(x)
        with shifted_max_pooling():
            found = model(x)
    assert torch.equal(found, expected)


def test_a_one_by_one_pooling_gives_a_new_tensor_not_its_input():
    """An in-place op after the pooling (a ReLU) must not change the map it pooled."""
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad(), shifted_max_pooling():
        pooled = nn.MaxPool2d(1, 1)(x)
    assert torch.equal(pooled, x)
    assert pooled.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


@pytest.mark.parametrize("call", [
    lambda x: F.max_pool2d(x, 2, stride=0),
    lambda x: F.max_pool2d(x, 2, padding=-1),
    lambda x: F.max_pool2d(x, 0),
    lambda x: F.max_pool2d(x[None], 2)])  # 5-d
def test_arguments_torch_refuses_are_refused_under_the_mode_too(call):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError):
        call(x)
    with pytest.raises(RuntimeError), shifted_max_pooling():
        call(x)


def test_on_another_device_the_mode_is_not_entered():
    with _Seen() as seen, shifted_max_pooling("meta"):
        F.max_pool2d(torch.randn(1, 2, 4, 4), 2)
    assert [n for n in seen.names if "pool" in n] == ["max_pool2d"]
