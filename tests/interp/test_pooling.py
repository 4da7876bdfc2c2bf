"""Max pooling by shifted maxima gives ``F.max_pool2d``'s values, and leaves autograd to it."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from pipeline.interp.pooling import max_pool_values


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
