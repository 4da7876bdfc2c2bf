"""Incremental occlusion equals the full forward: the tracked map's total, P(true class) and the
most probable class at every position, on real torchvision architectures with random weights
(sequential, residual with batch norm, concatenating branches, and squeeze-and-excitation,
where incremental inference stops at the first gate), and a model fx cannot trace falls back
to the full forward, said once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models

from pipeline.experiments.occlusion import incremental_graph, occlude, occluder_grid
from pipeline.experiments.occlusion_run import occlude_images
from pipeline.interp import Projector

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "googlenet":
        return models.googlenet(num_classes=10, aux_logits=False, init_weights=True).eval()
    return getattr(models, name)(num_classes=10).eval()


def both(model: nn.Module, module: str, side: int, size: int, stride: int,
         method: str = "deconvnet"):
    image = torch.randn(3, side, side, generator=torch.Generator().manual_seed(3))
    grid = occluder_grid((side, side), size, stride)
    graph, why = incremental_graph(model, image, module, grid)
    projector = Projector(model, method=method, batch_size=1)
    full = occlude(model, image, 4, module, grid, 16, projector)
    fast = occlude(model, image, 4, module, grid, 16, projector, incremental=graph) \
        if graph is not None else None
    return graph, why, full, fast


def assert_equal_results(fast, full) -> None:
    scale = float(np.abs(full.total).max())
    np.testing.assert_allclose(fast.total, full.total, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(fast.prob_true, full.prob_true, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.predicted_prob, full.predicted_prob, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fast.predicted, full.predicted)
    assert (fast.unit, fast.position) == (full.unit, full.position)


@pytest.mark.parametrize(("name", "module", "side", "size", "stride"), [
    ("alexnet", "features.10", 96, 24, 9),  # conv, LRN-free stack, max pools, in-place ReLUs
    # residual adds, eval batch norm, a container tracked
    pytest.param("resnet18", "layer3", 64, 16, 6, marks=pytest.mark.slow),
    # concatenated branches, ceil-mode max pools
    pytest.param("googlenet", "inception4b", 64, 16, 7, marks=pytest.mark.slow),
])
def test_incremental_occlusion_equals_the_full_forward(name, module, side, size, stride):
    graph, why, full, fast = both(build(name), module, side, size, stride)

    assert graph is not None, why
    assert why == ""  # incremental all the way to the tracked layer
    assert_equal_results(fast, full)
    assert np.ptp(full.total) > 0  # the square changes the map: the comparison is not vacuous


@pytest.mark.slow
def test_squeeze_and_excitation_stops_incremental_inference_at_its_gate_and_stays_exact():
    graph, why, full, fast = both(build("mobilenet_v3_small"), "features.6", 64, 16, 6,
                                   method="gradient")  # deconvnet has no Hardswish rule

    assert graph is not None
    assert "needs the whole map" in why and "AdaptiveAvgPool2d" in why
    assert_equal_results(fast, full)


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        if float(x.mean()) > 1e9:
            x = x * 2
        return self.head(x.mean(dim=(2, 3)))


class Viewing(nn.Module):
    """Flattens its last map with ``.view``, which needs the contiguous layout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6 * 12 * 12, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(x.view(x.size(0), -1))


@pytest.mark.parametrize(("model", "module", "side", "size", "stride", "channels_last"), [
    (lambda: build("alexnet"), "features.10", 96, 24, 9, True),
    (lambda: Viewing().eval(), "features.3", 24, 8, 3, False)])
def test_the_maps_are_channels_last_on_a_cpu_unless_the_model_needs_them_contiguous(
        model, module, side, size, stride, channels_last):
    """Channels-last where the convolutions are faster on it; a model whose ``.view`` of a map
    cannot read that layout keeps incremental inference, in the layout it computes in."""
    graph, why, full, fast = both(model(), module, side, size, stride)
    assert graph is not None, why
    assert graph.channels_last is channels_last
    assert_equal_results(fast, full)
    assert np.ptp(full.total) > 0


def test_an_untraceable_model_runs_the_full_forward_and_says_so_once():
    torch.manual_seed(0)
    model = Branchy().eval()
    images = {i: (torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(i)), 1)
              for i in range(2)}
    said: list[str] = []
    grid = occluder_grid((12, 12), 4, 4)
    arrays = occlude_images(model, images, [0, 1], "conv", grid, 8, MEAN, STD, say=said.append)

    assert len(said) == 1 and "whole network" in said[0] and "traced" in said[0]
    expected = occlude(model, images[1][0], 1, "conv", grid, 8)
    np.testing.assert_array_equal(arrays["total"][1], expected.total)


class Reflecting(nn.Module):
    """A convolution that pads by reflection: its border outputs read pixels far from the
    square, so incremental inference stops there (and the layer after it keeps its field)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
                                      nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, padding=1),
                                      nn.ReLU(inplace=True))
        self.head = nn.Linear(6 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def test_the_stage_says_once_where_incremental_inference_stops_and_stays_exact():
    torch.manual_seed(0)
    model = Reflecting().eval()
    images = {i: (torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(i)), 2)
              for i in range(2)}
    said: list[str] = []
    grid = occluder_grid((16, 16), 4, 2)
    arrays = occlude_images(model, images, [0, 1], "features.2", grid, 16, MEAN, STD,
                            say=said.append)

    assert len(said) == 1 and "stops before features.2" in said[0] and "Conv2d" in said[0]
    expected = occlude(model, images[1][0], 2, "features.2", grid, 16)
    np.testing.assert_allclose(arrays["total"][1], expected.total, rtol=1e-5)
