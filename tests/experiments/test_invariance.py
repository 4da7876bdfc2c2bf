"""Figure 5's measurements: the paper's ranges, zero distance at the identity, positive elsewhere,
and the feature vectors read where the docs say."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.experiments.invariance import (
    COLUMNS,
    amounts,
    example_amounts,
    feature_layers,
    measure,
    transform_image,
)

SIDE = 32


def small_net(with_linear: bool = True) -> nn.Module:
    """conv -> ReLU -> pool -> conv -> ReLU (-> flatten -> Linear -> ReLU -> Linear), seeded."""
    torch.manual_seed(0)
    layers = OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(4, 6, 3, padding=1)), ("relu2", nn.ReLU()),
    ])
    if with_linear:
        layers.update([("flatten", nn.Flatten()), ("fc1", nn.Linear(6 * 16 * 16, 10)),
                       ("relu3", nn.ReLU()), ("fc2", nn.Linear(10, 3))])
    else:  # a fully convolutional classifier: 3 class maps, averaged
        layers.update([("head", nn.Conv2d(6, 3, 1)), ("pool", nn.AdaptiveAvgPool2d(1)),
                       ("flatten", nn.Flatten())])
    return nn.Sequential(layers).eval()


@pytest.fixture
def image() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    image = 0.2 * torch.randn(3, SIDE, SIDE, generator=generator)
    image[:, 8:20, 10:22] += 1.5
    return image


def test_ranges_are_the_papers():
    shifts = amounts("translation", 224)
    assert len(shifts) == 13 and shifts[6] == 0.0
    np.testing.assert_allclose(shifts, np.arange(-60, 61, 10))
    np.testing.assert_allclose(amounts("translation", 64)[[0, -1]], [-60 * 64 / 224, 60 * 64 / 224])
    np.testing.assert_allclose(amounts("scale", 64), np.linspace(1.0, 1.8, 9))
    np.testing.assert_array_equal(amounts("rotation", 64), np.arange(0, 351, 10))
    assert example_amounts("rotation", 64).tolist() == [0, 90, 180, 270, 350]
    assert example_amounts("scale", 64)[[0, -1]].tolist() == [1.0, 1.8]


def test_identity_is_the_original_and_others_move_away(image):
    model = small_net()
    layers = feature_layers(model, "relu1", "relu2", "conv1", "conv2")
    assert (layers.last, layers.last_is_input) == ("fc2", True)
    rows = measure(model, image, 1, layers, batch_size=16)
    assert list(rows.columns) == list(COLUMNS)
    assert rows.groupby("transform").size().to_dict() == {"translation": 13, "scale": 9,
                                                          "rotation": 36}
    with torch.no_grad():
        probabilities = model(image[None]).softmax(dim=1)[0]
        hidden = model[:-1](image[None])[0]  # the input of the last Linear
        first = model.relu1(model.conv1(image[None]))
    identity = ((rows["transform"] == "translation") & (rows["amount"] == 0)) \
        | ((rows["transform"] == "scale") & (rows["amount"] == 1)) \
        | ((rows["transform"] == "rotation") & (rows["amount"] == 0))
    assert identity.sum() == 3
    assert (rows.loc[identity, ["distance_layer1", "distance_last"]] == 0).all().all()
    np.testing.assert_allclose(rows.loc[identity, "prob_true"], float(probabilities[1]),
                               rtol=1e-6)
    assert (rows.loc[identity, "predicted"] == int(probabilities.argmax())).all()
    moved = rows[~identity]
    assert (moved["distance_layer1"] > 0).all() and (moved["distance_last"] > 0).all()
    assert rows["norm_last"].iloc[0] == pytest.approx(float(hidden.norm()), rel=1e-5)
    assert rows["norm_layer1"].iloc[0] == pytest.approx(float(first.norm()), rel=1e-5)
    # a copy rotated by 350 degrees is closer to the original than one rotated by 180
    rotation = rows[rows["transform"] == "rotation"].set_index("amount")
    assert rotation.loc[350.0, "distance_layer1"] < rotation.loc[180.0, "distance_layer1"]


def test_distance_is_the_euclidean_distance_of_the_transformed_copy(image):
    model = small_net()
    layers = feature_layers(model, "relu1", "relu2")
    rows = measure(model, image, 0, layers)
    row = rows[rows["transform"] == "scale"].iloc[4]
    assert row["amount"] == pytest.approx(1.4)
    moved = transform_image(image, "scale", float(row["amount"]))
    with torch.no_grad():
        a = model.relu1(model.conv1(image[None])).flatten()
        b = model.relu1(model.conv1(moved[None])).flatten()
        p = model(moved[None]).softmax(dim=1)[0]
    assert row["distance_layer1"] == pytest.approx(float((a - b).norm()), rel=1e-4)
    assert row["prob_true"] == pytest.approx(float(p[0]), rel=1e-4)


def test_without_a_linear_layer_the_last_analysed_layer_is_used(image):
    model = small_net(with_linear=False)
    layers = feature_layers(model, "relu1", "relu2", "conv1", "conv2")
    assert (layers.last, layers.last_is_input, layers.last_label) == ("relu2", False, "conv2")
    rows = measure(model, image, 2, layers)
    with torch.no_grad():
        last = model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(image[None])))))
    assert rows["norm_last"].iloc[0] == pytest.approx(float(last.norm()), rel=1e-5)


def test_a_positive_shift_moves_the_image_down_and_fills_with_zero(image):
    shifted = transform_image(image, "translation", 3.0)
    np.testing.assert_allclose(shifted[:, 3:, :], image[:, :-3, :], atol=1e-5)
    assert not shifted[:, :3, :].any()
    assert transform_image(image, "rotation", 0.0) is image
    with pytest.raises(ValueError, match="unknown transform"):
        transform_image(image, "shear", 1.0)
