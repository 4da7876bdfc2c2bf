"""The optimisation on small real networks: it raises each unit, stops at the unit's layer,
is the same bytes for the same seed, works through SiLU blocks, and reports a dead unit."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.featurevis.featurevis_run import driven
from pipeline.featurevis.optimise import (
    Truncated,
    centre_position,
    centre_side,
    frozen,
    optimise,
)
from pipeline.featurevis.parameterisation import FourierImage
from pipeline.featurevis.transforms import random_similarity
from pipeline.interp.receptive_field import ReceptiveField, receptive_fields


def relu_net(dead_unit: int | None = None) -> nn.Sequential:
    """conv-relu-pool-conv-relu-conv; unit ``dead_unit`` of conv2 never fires."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 6, 3, padding=1)), ("relu2", nn.ReLU()),
        ("head", nn.Conv2d(6, 4, 3, padding=1))]))
    if dead_unit is not None:
        with torch.no_grad():
            net.conv2.weight[dead_unit] = 0
            net.conv2.bias[dead_unit] = -1
    return net


def silu_net() -> nn.Sequential:
    """Two conv-BN-SiLU blocks (an EfficientNet-like activation: never exactly zero)."""
    torch.manual_seed(1)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("bn1", nn.BatchNorm2d(8)), ("act1", nn.SiLU()),
        ("conv2", nn.Conv2d(8, 6, 3, stride=2, padding=1)), ("bn2", nn.BatchNorm2d(6)),
        ("act2", nn.SiLU())]))
    net.train()
    with torch.no_grad():  # BN statistics of something like images, then frozen in eval mode
        net(torch.randn(16, 3, 32, 32))
    return net.eval()


def identity(images: torch.Tensor) -> torch.Tensor:
    return (images - 0.5) / 0.25


def run(net: nn.Module, module: str, units, objective="mean", side=32, seed=0, steps=24,
        position=(0, 0)):
    with frozen(net):
        return optimise(Truncated(net, module), units, side, 3, identity, objective,
                        [torch.Generator().manual_seed(seed * 100 + unit) for unit in units],
                        steps=steps, position=position)


def test_the_forward_pass_stops_at_the_units_layer():
    net = relu_net()
    calls = []
    net.head.register_forward_hook(lambda *args: calls.append(1))
    run(net, "relu2", [0, 1], steps=3)
    assert calls == []  # nothing above relu2 was computed
    out = Truncated(net, "relu2")(torch.zeros(1, 3, 16, 16))
    assert out.shape == (1, 6, 8, 8)


def test_it_raises_every_unit_well_above_where_it_started():
    net = relu_net()
    result = run(net, "relu2", range(6), steps=48)
    assert result.images.dtype == np.uint8 and result.images.shape == (6, 32, 32, 3)
    # from a nearly grey image (most units at or near 0) to at least twice as high
    assert (result.value > 2 * result.start).all() and (result.value > 0.1).all()
    assert driven(result).all()
    # the stored value is measured on the stored 8-bit image, with no transform
    with torch.no_grad():
        image = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 255
        maps = Truncated(net, "relu2")(identity(image))
    measured = maps[torch.arange(6), torch.arange(6)].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(result.value, measured, rtol=1e-5)
    # the images are not flat grey: the optimisation made a pattern
    assert result.images.reshape(6, -1).std(axis=1).min() > 10


def test_an_image_does_not_depend_on_the_rest_of_its_batch():
    net = relu_net()
    alone, together = run(net, "relu2", [3]), run(net, "relu2", [1, 3, 5])
    np.testing.assert_allclose(alone.value, together.value[1], rtol=1e-4)
    assert np.abs(alone.images[0].astype(int) - together.images[1]).max() <= 1


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_images():
    net = relu_net()
    first, again = run(net, "relu2", [0, 3], seed=7), run(net, "relu2", [0, 3], seed=7)
    assert first.images.tobytes() == again.images.tobytes()
    assert first.value.tobytes() == again.value.tobytes()
    other = run(net, "relu2", [0, 3], seed=8)
    assert other.images.tobytes() != first.images.tobytes()


def test_a_dead_unit_is_reported_not_driven():
    net = relu_net(dead_unit=2)
    result = run(net, "relu2", range(6), steps=32)
    assert list(np.flatnonzero(~driven(result))) == [2]
    assert result.value[2] == 0 and result.peak[2] == 0


def test_silu_blocks_are_driven_too():
    net = silu_net()
    result = run(net, "act2", range(6), steps=128)
    assert driven(result).all()
    # a random network responds weakly; every unit still rises well above where it started
    assert (result.value > result.start + 0.05).all() and (result.peak > 0.15).all()


def test_the_centre_objective_drives_the_centred_cell_on_a_field_sized_input():
    net = relu_net()
    field = receptive_fields(net, (32, 32))["relu2"]
    side = centre_side(field, 32)
    assert max(field.size) < side < 32  # the field and a margin: not the whole input
    with torch.no_grad():
        map_hw = tuple(Truncated(net, "relu2")(torch.zeros(1, 3, side, side)).shape[-2:])
    position = centre_position(field, map_hw, side)
    top, left, bottom, right = field.box(*position)
    assert abs((top + bottom) / 2 - side / 2) <= field.jump[0] / 2
    assert abs((left + right) / 2 - side / 2) <= field.jump[1] / 2
    result = run(net, "relu2", range(6), "centre", side=side, position=position, steps=48)
    assert result.images.shape == (6, side, side, 3)
    assert driven(result).all()


@pytest.mark.parametrize("size,map_hw,expected", [(11, (4, 4), (1, 1)), (64, (8, 8), (4, 4))])
def test_centre_position_is_the_cell_whose_field_is_centred(size, map_hw, expected):
    # a field of 7 px, stride 8 (jump), first cell's field starting at -3
    field = ReceptiveField(size=(7, 7), jump=(8, 8), first=(-3, -3))
    assert centre_position(field, map_hw, size) == expected


def test_the_images_of_a_batch_do_not_mix():
    """An image's gradient is its own unit's alone: the loss of one image gives the other
    image of the batch no gradient at all (eval mode; nothing in the forward pass mixes the
    batch)."""
    net = relu_net()
    image = FourierImage([torch.Generator().manual_seed(i) for i in range(2)], 3, 32)
    with frozen(net):
        forward = Truncated(net, "relu2")
        value = forward(identity(image.pixels()))[[0, 1], [0, 1]].mean(dim=(1, 2))
        (-value[0]).backward()  # as the optimiser does: the loss is minimised
    assert image.spectrum.grad is not None
    assert image.spectrum.grad[1].abs().max() == 0 and image.spectrum.grad[0].abs().max() > 0


def test_transforms_keep_the_shape_and_fill_with_grey():
    images = torch.zeros(8, 3, 40, 40)
    moved = random_similarity(images, [torch.Generator().manual_seed(i) for i in range(8)])
    assert moved.shape == images.shape
    # inside, the (black) image; where the moved image leaves the canvas, Lucid's grey (0.5);
    # blends of the two along the edge
    assert ((moved >= 0) & (moved <= 0.5)).all()
    assert (moved == 0).float().mean() > 0.5
    assert (moved == 0.5).any(dim=(1, 2, 3)).float().mean() >= 0.5  # most are moved off


def _blocked_gradient(net: nn.Module) -> float:
    """The input gradient of a unit that is below zero everywhere (a blocked ReLU)."""
    x = torch.full((1, 1, 4, 4), -1.0, requires_grad=True)
    (-net(x).sum()).backward()
    assert x.grad is not None
    return float(x.grad.abs().sum())


class Functional(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu(x) * 2


@pytest.mark.parametrize("rectifier", [nn.ReLU(), nn.ReLU(inplace=True), Functional(),
                                       nn.ReLU6(inplace=True)], ids=["module", "in place",
                                                                   "functional", "relu6"])
def test_a_blocked_rectifier_passes_the_gradient_that_raises_it(rectifier):
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), rectifier)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    assert _blocked_gradient(net) == 0  # plain autograd: nothing to follow from the start
    with frozen(net):
        assert _blocked_gradient(net) > 0  # redirected (Lucid's redirected_relu_grad)
    assert _blocked_gradient(net) == 0  # given back


def test_parameters_modes_and_gradients_are_given_back_also_after_an_error():
    net = relu_net()
    net.train()
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters()) and not net.training
    assert all(p.requires_grad for p in net.parameters()) and net.training
    wrapper = nn.Module()
    wrapper.add_module("net", net)
    wrapper.add_module("unused", nn.ReLU())
    wrapper.forward = lambda x: wrapper.net(x)  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="'unused' was not called"), frozen(wrapper):
        Truncated(wrapper, "net.relu2")(torch.zeros(1, 3, 8, 8))
        Truncated(wrapper, "unused")(torch.zeros(1, 3, 8, 8))
    assert all(p.requires_grad for p in net.parameters()) and net.training
    assert not net.relu2._forward_hooks  # the truncating hook is gone
    probe = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        probe[0].weight.fill_(1.0)
    assert _blocked_gradient(probe) == 0  # no redirection outside
