"""The shared forward pass of the experiments leaves no hook behind and the model's modes as they
were, also after an error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.experiments.capture import forward_capturing, last_linear


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_outputs_inputs_and_probabilities_from_one_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    model.train()
    images = torch.randn(5, 3, 8, 8)
    probabilities, outputs, inputs = forward_capturing(model, images, outputs=("1",),
                                                       inputs=("3",))
    assert model.training and all(m.training for m in model.modules()) and hooks(model) == 0
    with torch.no_grad():
        relu = model[1](model[0](images))
        expected = model(images).softmax(dim=1)
    torch.testing.assert_close(outputs["1"], relu)
    torch.testing.assert_close(inputs["3"], relu.flatten(1))
    torch.testing.assert_close(probabilities, expected)
    assert last_linear(model) == "3" and last_linear(nn.Sequential(nn.ReLU())) is None


def test_hooks_are_removed_after_an_error():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with pytest.raises(RuntimeError):
        forward_capturing(model, torch.randn(1, 5, 8, 8), outputs=("1",), inputs=("0",))
    assert hooks(model) == 0
    with pytest.raises(AttributeError):
        forward_capturing(model, torch.randn(1, 3, 8, 8), outputs=("1", "nope"))
    assert hooks(model) == 0



def test_a_captured_map_is_not_changed_by_an_in_place_op_after_it():
    """AlexNet's features.0 is followed by ReLU(inplace=True): the conv's captured output must
    keep its negative values."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(2 * 6 * 6, 4))
    images = torch.randn(3, 3, 8, 8)
    _, outputs, _ = forward_capturing(model, images, outputs=("0",))
    with torch.no_grad():
        conv = model[0](images)
    assert (conv < 0).any()
    torch.testing.assert_close(outputs["0"], conv)
