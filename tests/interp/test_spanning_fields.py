"""Receptive fields through normalisations: one whose statistics span the feature map (GroupNorm,
InstanceNorm, LayerNorm over H and W, batch statistics, F.normalize over H and W) makes every
unit after it depend on the whole image, so those units have no receptive field (left out of
the defaults, refused by name, said why); one that acts per position (BatchNorm in eval mode,
local response normalisation, LayerNorm or F.normalize over channels) keeps the field local."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum_reference import best_unit
from small_models import Called
from torch import nn

from pipeline.errors import UserError
from pipeline.interp import Projector, ReceptiveField, analysable_layers, receptive_fields
from pipeline.interp.layers import default_notes
from pipeline.interp.receptive_field import traced_fields
from pipeline.interp.rules import unruled_layers

SIZE = 32
SEVEN = ReceptiveField((7, 7), (1, 1), (-3, -3))  # the 7 x 7 conv's field, padding 3


class Normalised(nn.Module):
    """conv 7 x 7 -> norm -> ReLU -> conv 1 x 1 -> ReLU: were ``norm`` per position, both
    ReLUs' units would see 7 x 7 pixels."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.conv1, self.norm, self.relu1 = nn.Conv2d(3, 8, 7, padding=3), norm, nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(8, 8, 1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.norm(self.conv1(x)))))


class ChannelsLast(nn.Module):
    """LayerNorm over channels, applied channels-last as ConvNeXt does."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


SPANNING = {  # norm -> how the refusal names it
    "nn.GroupNorm(2, 8)": (lambda: nn.GroupNorm(2, 8), "GroupNorm (norm)"),
    "nn.InstanceNorm2d(8)": (lambda: nn.InstanceNorm2d(8), "InstanceNorm2d (norm)"),
    "nn.LayerNorm([8, 32, 32])": (lambda: nn.LayerNorm([8, SIZE, SIZE]), "LayerNorm (norm)"),
    "nn.BatchNorm2d without running statistics": (
        lambda: nn.BatchNorm2d(8, track_running_stats=False), "BatchNorm2d (norm)"),
    "F.group_norm(x, 2)": (lambda: Called(lambda x: F.group_norm(x, 2)),
                           "group_norm (in norm)"),
    "F.instance_norm(x)": (lambda: Called(F.instance_norm), "instance_norm (in norm)"),
    "F.layer_norm(x, x.shape[1:])": (lambda: Called(lambda x: F.layer_norm(x, x.shape[1:])),
                                     "layer_norm (in norm)"),
    "F.normalize(x, dim=(2, 3))": (lambda: Called(lambda x: F.normalize(x, dim=(2, 3))),
                                   "normalize (in norm)"),
}


@pytest.mark.parametrize("written", sorted(SPANNING))
def test_units_after_a_normalisation_over_the_whole_map_have_no_receptive_field(written):
    make, named = SPANNING[written]
    torch.manual_seed(0)
    model = Normalised(make()).eval()
    fields, after = traced_fields(model, (SIZE, SIZE))
    assert fields == {"conv1": SEVEN}  # not a 7 px field for relu1, conv2, relu2
    assert after == {name: named for name in ("norm", "relu1", "conv2", "relu2")}
    assert analysable_layers(model, (SIZE, SIZE)) == []
    assert default_notes(model, (SIZE, SIZE)) == [
        f"2 of its 2 activation maps (ReLU, from relu1 on) are left out: after {named}, whose "
        "statistics span the whole feature map, units see the whole image, so their receptive "
        "field is unknown"]
    with pytest.raises(UserError) as refused:
        analysable_layers(model, (SIZE, SIZE), names=["conv1", "relu2"])
    assert str(refused.value) == (
        f"layer 'relu2' has no receptive field: it comes after {named}, whose statistics span "
        "the whole feature map, so each of its units depends on the whole image; analyse "
        "layers before it")
    assert [layer.name for layer in analysable_layers(model, (SIZE, SIZE), ["conv1"])] == [
        "conv1"]


def test_a_unit_after_group_norm_depends_on_the_whole_image() -> None:
    """What the missing field stands for: the gradient of one unit reaches every pixel, far
    outside the 7 x 7 box the conv alone would give it."""
    torch.manual_seed(1)
    model = Normalised(nn.GroupNorm(2, 8)).eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    c, y, xx = best_unit(model, "relu2", x)
    for method in ("gradient", "deconvnet"):
        got = Projector(model, method).project(x, "relu2", torch.tensor([c]),
                                               torch.tensor([[y, xx]]))
        support = got[0].abs().sum(0) > 0
        assert support.all(), method  # every pixel, not a 7 x 7 box
    assert "relu2" not in receptive_fields(model, (SIZE, SIZE))


LOCAL = {
    "nn.BatchNorm2d(8) in eval mode": lambda: nn.BatchNorm2d(8),
    "nn.InstanceNorm2d with running statistics":
        lambda: nn.InstanceNorm2d(8, track_running_stats=True),
    "nn.LocalResponseNorm(3)": lambda: nn.LocalResponseNorm(3),
    "LayerNorm over channels, channels-last": ChannelsLast,
    "F.normalize(x, dim=1)": lambda: Called(lambda x: F.normalize(x, dim=1)),
    "F.layer_norm over channels": lambda: Called(
        lambda x: F.layer_norm(x.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)),
}


@pytest.mark.parametrize("written", sorted(LOCAL))
def test_a_normalisation_per_position_keeps_the_field_local(written: str) -> None:
    torch.manual_seed(0)
    model = Normalised(LOCAL[written]()).train()  # traced in eval mode whatever the flag
    fields, after = traced_fields(model, (SIZE, SIZE))
    assert after == {}
    assert fields["relu1"] == fields["relu2"] == SEVEN
    assert [layer.name for layer in analysable_layers(model, (SIZE, SIZE))] == ["relu1", "relu2"]


class _Untraceable(Normalised):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() >= 0:  # data-dependent control flow: torch.fx cannot trace this
            x = x * 1.0
        return super().forward(x)


def test_the_hook_fallback_stops_at_a_spanning_normalisation_too() -> None:
    model = _Untraceable(nn.GroupNorm(2, 8)).eval()
    fields, after = traced_fields(model, (SIZE, SIZE))
    assert fields == {"conv1": SEVEN}
    assert after == {name: "GroupNorm (norm)" for name in ("norm", "relu1", "conv2", "relu2")}


def test_a_statistic_of_the_whole_map_merged_back_has_no_receptive_field() -> None:
    """``x / x.abs().sum()``: a scalar computed from the whole map, no normalisation call."""
    model = Normalised(Called(lambda x: x / (x.abs().sum() + 1))).eval()
    fields, after = traced_fields(model, (SIZE, SIZE))
    assert fields == {"conv1": SEVEN} and after == {}


class StandardisedConv(nn.Conv2d):
    """A convolution whose weight is standardised when it runs (BiT's StdConv2d): the weight is
    computed from parameters alone, a constant of the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.weight.mean((1, 2, 3), keepdim=True)
        weight = (self.weight - mean) / (self.weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


def test_a_convolution_with_a_weight_computed_from_parameters_keeps_its_field() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(StandardisedConv(3, 8, 7, padding=3), nn.ReLU(),
                          StandardisedConv(8, 8, 3, padding=1), nn.ReLU()).eval()
    assert traced_fields(model, (SIZE, SIZE)) == (
        {"0": SEVEN, "1": SEVEN, "2": ReceptiveField((9, 9), (1, 1), (-4, -4)),
         "3": ReceptiveField((9, 9), (1, 1), (-4, -4))}, {})
    assert unruled_layers(model, (SIZE, SIZE), ["1", "3"]) == {"1": None, "3": None}
