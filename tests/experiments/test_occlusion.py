"""Figure 7's occlusion maps: the batched sweep equals occluding one position at a time, on a model
whose weights are set by hand."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.experiments.occlusion import (
    OccluderGrid,
    occlude,
    occluder_grid,
    strongest_unit,
)
from pipeline.interp import Projector

SIDE = 16


class HandSet(nn.Module):
    """conv 3x3 (3 hand-made filters) -> ReLU -> max-pool 2 -> linear to 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(3, 3, 3, padding=1)),
            ("relu", nn.ReLU()),
            ("pool", nn.MaxPool2d(2)),
        ]))
        self.classifier = nn.Linear(3 * (SIDE // 2) ** 2, 4)
        with torch.no_grad():
            weight = torch.zeros(3, 3, 3, 3)
            weight[0, 0] = 1 / 9  # the red channel's local mean
            weight[1, 1] = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])  # green edges
            weight[2] = -0.2  # dark places, all channels
            self.features.conv.weight.copy_(weight)
            self.features.conv.bias.copy_(torch.tensor([0.0, 0.0, 0.3]))
            k = torch.arange(4, dtype=torch.float32)[:, None]
            j = torch.arange(3 * (SIDE // 2) ** 2, dtype=torch.float32)[None, :]
            self.classifier.weight.copy_(0.3 * torch.cos(0.37 * (k + 1) * (j + 1)))
            self.classifier.bias.copy_(torch.tensor([0.0, 0.1, -0.1, 0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def direct_conv_map(model: HandSet, image: torch.Tensor) -> torch.Tensor:
    """The ReLU's output, computed without hooks: [3, H, W]."""
    conv = model.features.conv
    with torch.no_grad():
        return F.relu(F.conv2d(image[None], conv.weight, conv.bias, padding=1))[0]


@pytest.fixture
def model() -> HandSet:
    return HandSet().eval()


@pytest.fixture
def image() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    image = 0.3 * torch.randn(3, SIDE, SIDE, generator=generator)
    image[0, 9:13, 4:8] = 4.0  # a bright red square: filter 0 peaks inside it
    return image


def test_batched_maps_equal_one_position_at_a_time(model, image):
    label, size, stride = 2, 5, 3
    grid = occluder_grid((SIDE, SIDE), size, stride)
    result = occlude(model, image, label, "features.relu", grid, batch_size=7)

    # the tracked map: the channel with the largest activation on the unoccluded image
    clean = direct_conv_map(model, image)
    assert result.unit == 0 == int(clean.reshape(3, -1).max(dim=1).values.argmax())
    y, x = result.position
    assert clean[0, y, x] == clean[0].max() and 9 <= y < 13 and 4 <= x < 8
    assert result.clean_peak == pytest.approx(float(clean[0].max()), rel=1e-6)
    assert result.clean_total == pytest.approx(float(clean[0].sum()), rel=1e-5)
    with torch.no_grad():
        clean_probs = model(image[None]).softmax(dim=1)[0]
    assert result.clean_prob == pytest.approx(float(clean_probs[label]), rel=1e-5)

    rows = math.ceil(SIDE / stride)
    assert result.total.shape == result.prob_true.shape == result.predicted.shape == (rows, rows)
    clipped = 0
    for i in range(rows):
        for j in range(rows):
            # the square centred at ((i + 0.5) * stride, (j + 0.5) * stride), clipped
            top = math.floor((i + 0.5) * stride - size / 2)
            left = math.floor((j + 0.5) * stride - size / 2)
            occluded = image.clone()
            occluded[:, max(top, 0):top + size, max(left, 0):left + size] = 0.0
            clipped += top < 0 or left < 0 or top + size > SIDE or left + size > SIDE
            with torch.no_grad():
                probs = model(occluded[None]).softmax(dim=1)[0]
                total = float(direct_conv_map(model, occluded)[0].sum())
            assert result.total[i, j] == pytest.approx(total, rel=1e-5, abs=1e-5), (i, j)
            assert result.prob_true[i, j] == pytest.approx(float(probs[label]), rel=1e-5)
            assert result.predicted[i, j] == int(probs.argmax()), (i, j)
            assert result.predicted_prob[i, j] == pytest.approx(float(probs.max()), rel=1e-5)
    assert clipped >= 2 * rows - 1  # the first and last rows and columns are clipped
    # covering the red square silences the tracked map most
    assert np.unravel_index(result.total.argmin(), result.total.shape) in {
        (i, j) for i in range(rows) for j in range(rows)
        if 9 - 2 <= (i + 0.5) * stride <= 13 + 2 and 4 - 2 <= (j + 0.5) * stride <= 8 + 2}


def test_batch_size_does_not_change_the_maps(model, image):
    grid = occluder_grid((SIDE, SIDE), 4, 2)
    one = occlude(model, image, 1, "features.relu", grid, batch_size=1)
    many = occlude(model, image, 1, "features.relu", grid, batch_size=64)
    np.testing.assert_allclose(one.total, many.total, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.prob_true, many.prob_true, rtol=1e-5)
    np.testing.assert_array_equal(one.predicted, many.predicted)


def test_projection_is_the_deconvnet_projection_of_the_tracked_peak(model, image):
    grid = occluder_grid((SIDE, SIDE), 4, 4)
    result = occlude(model, image, 0, "features.relu", grid)
    expected = Projector(model, method="deconvnet").project(
        image[None], "features.relu", torch.tensor([result.unit]),
        torch.tensor([result.position]))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(result.projection, expected, rtol=1e-6, atol=1e-7)
    # a 3x3 filter at (y, x) sees only the pixels around it
    y, x = result.position
    outside = np.ones((SIDE, SIDE), bool)
    outside[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = False
    assert np.abs(result.projection).max() > 0 and not result.projection[outside].any()


def test_defaults_follow_the_config_docs():
    assert occluder_grid((64, 64)) == OccluderGrid(16, 2, (64, 64))
    assert occluder_grid((224, 224)) == OccluderGrid(56, 7, (224, 224))
    assert occluder_grid((224, 224), size=30) == OccluderGrid(30, 3, (224, 224))
    assert occluder_grid((64, 64), size=5) == OccluderGrid(5, 1, (64, 64))  # at least 1 px
    with pytest.raises(ValueError, match="larger"):
        occluder_grid((32, 32), size=33)


def test_the_map_covers_the_image_block_by_block():
    grid = occluder_grid((64, 64), 16, 6)
    rows, columns = grid.shape
    assert (rows, columns) == (11, 11) and (rows - 1) * 6 < 64 <= rows * 6
    assert grid.box(0, 0) == (0, 0, 11, 11)  # centre (3, 3): clipped above and left
    assert grid.box(5, 2) == (25, 7, 41, 23)  # centre (33, 15): whole
    assert grid.box(10, 10) == (55, 55, 64, 64)  # centre (63, 63): clipped below and right
    assert len(grid.boxes()) == rows * columns


def test_ties_go_to_the_lowest_channel_and_first_position():
    maps = torch.zeros(3, 4, 4)
    maps[1, 2, 3] = maps[2, 0, 0] = maps[1, 3, 0] = 5.0
    assert strongest_unit(maps) == (1, (2, 3), 5.0)
