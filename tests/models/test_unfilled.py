"""A model whose weights are all loaded is built without random draws, and loads the same."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from pipeline.models.unfilled import unfilled, unfilled_model


def test_no_random_numbers_are_drawn_while_unfilled():
    """The generator's state after building is the state before: the default fills of linear
    and convolution layers (which hand the tensor to nn.init by keyword) drew nothing."""
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    with unfilled():
        nn.Sequential(nn.Conv2d(3, 64, 11), nn.Linear(256, 128))
        nn.init.normal_(nn.Linear(100, 100).weight, 0, 0.01)  # VGG's classifier
    assert torch.equal(torch.rand(4), expected)


def test_fills_that_loop_on_their_draws_still_draw_and_finish():
    """``trunc_normal_`` resamples until every value is in range: left undrawn, its loop would
    never end (ConvNeXt and ViTs build with it)."""
    with unfilled():
        values = nn.init.trunc_normal_(torch.empty(10_000), std=0.02, a=-0.04, b=0.04)
    assert values.abs().max() <= 0.04 and values.std() > 0.01


def test_a_loaded_model_equals_the_same_model_built_with_its_draws_then_loaded():
    torch.manual_seed(1)
    state = torchvision.models.squeezenet1_1(num_classes=7).state_dict()
    model = unfilled_model(lambda: torchvision.models.squeezenet1_1(num_classes=7))
    model.load_state_dict(state)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


class _Noisy(nn.Module):
    """A module with a random buffer that no weights file holds."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.register_buffer("noise", nn.init.normal_(torch.empty(5)), persistent=False)


def test_a_model_with_a_buffer_no_file_holds_is_built_with_its_draws():
    torch.manual_seed(2)
    drawn = _Noisy().noise
    state = _Noisy().state_dict()
    torch.manual_seed(2)
    model = unfilled_model(_Noisy)
    model.load_state_dict(state)
    assert torch.equal(model.noise, drawn)
    assert torch.equal(model.linear.weight, state["linear.weight"])
