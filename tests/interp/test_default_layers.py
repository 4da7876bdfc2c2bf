"""The default layers are the activated outputs of each conv block, however the activation is
called, and `layers --model` says what they are and whether the deconvnet applies to them."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import SqueezeExcitation

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.interp import analysable_layers
from pipeline.interp.layers import default_notes
from pipeline.preflight import checked_layers

SIZE = 64  # every family below runs at 64 px; small keeps the CPU passes short
slow = pytest.mark.slow  # a torchvision model's passes take one to two seconds each


def _layers_command(model: str, capsys: pytest.CaptureFixture[str]) -> tuple[list, list]:
    """`layers --model MODEL --image-size 64` in this process: its table rows (split on
    whitespace) and the lines after the table."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet's note on its init
        assert main(["layers", "--model", model, "--image-size", str(SIZE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    count = int(lines[0].split(": ")[1].split()[0])
    return [line.split() for line in lines[2:2 + count]], lines[2 + count:] if count else lines[1:]


def _mark(row: list[str]) -> str:
    """The deconvnet/guided column: everything after the field's first (y, x)."""
    end = next(i for i, word in enumerate(row) if word.endswith(")"))
    return " ".join(row[end + 1:])


@slow
def test_resnet50_defaults_are_its_relu_modules(capsys) -> None:
    rows, notes = _layers_command("resnet50", capsys)
    blocks = [f"layer{a}.{b}.relu" for a, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for b in range(n)]
    assert [row[1] for row in rows] == ["relu"] + blocks
    assert [row[0] for row in rows] == [f"conv{i}" for i in range(1, 18)]
    assert {_mark(row) for row in rows} == {"yes"} and notes == []


@slow
def test_mobilenet_v2_defaults_are_its_relu6_outputs(capsys) -> None:
    """ReLU6 has a rule (a capped rectifier); the linear bottleneck convs end in no activation,
    so each maps to the next block's first ReLU6 and adds no layer: 35, not 52 raw convs."""
    rows, notes = _layers_command("mobilenet_v2", capsys)
    names = [row[1] for row in rows]
    assert len(names) == 35 and names[:4] == [
        "features.0.2", "features.1.conv.0.2", "features.2.conv.0.2", "features.2.conv.1.2"]
    assert names[-1] == "features.18.2" and all(name.endswith(".2") for name in names)
    assert {_mark(row) for row in rows} == {"yes"} and notes == []


@slow
def test_googlenet_defaults_are_its_basic_conv_blocks(capsys) -> None:
    """BasicConv2d returns F.relu(bn(conv(x))): the block itself is the rectified output."""
    rows, notes = _layers_command("googlenet", capsys)
    names = [row[1] for row in rows]
    assert len(names) == 57 and names[:5] == [
        "conv1", "conv2", "conv3", "inception3a.branch1", "inception3a.branch2.0"]
    assert not any(name.endswith(".conv") for name in names)  # no raw convolution
    assert {_mark(row) for row in rows} == {"yes"} and notes == []


@slow
def test_efficientnet_defaults_are_silu_outputs_and_say_so(capsys) -> None:
    rows, notes = _layers_command("efficientnet_b0", capsys)
    assert [row[1] for row in rows] == ["features.0.2", "features.1.0.block.0.2"]
    assert [_mark(row) for row in rows] == ["no: SiLU", "no: SiLU in features.0.2"]
    assert notes[0] == ("efficientnet_b0: its activations are SiLU, for which the deconvnet has "
                        "no rule: the defaults are its SiLU outputs, not rectified ones")
    assert notes[1].startswith("efficientnet_b0: 31 of its 33 activation maps (SiLU, from "
                               "features.2.0.block.0.2 on) are left out: after its first "
                               "squeeze-excitation gate (features.1.0.block.1)")
    assert 'method = "gradient"' in notes[2]


@slow
def test_convnext_defaults_are_its_block_outputs(capsys) -> None:
    """Its GELUs run channels-last inside each block, between two permutes: not a feature map,
    so each block's output (after the residual add) is the layer, and GELU has no rule."""
    rows, notes = _layers_command("convnext_tiny", capsys)
    blocks = [f"features.{stage}.{i}" for stage, n in ((1, 3), (3, 3), (5, 9), (7, 3))
              for i in range(n)]
    assert [row[1] for row in rows] == blocks
    assert {_mark(row) for row in rows} == {"no: GELU in features.1.0.block.4"}
    assert notes[0] == ("convnext_tiny: its GELU outputs are not channels-first feature maps "
                        "(applied channels-last inside each block): the defaults are the "
                        "blocks' outputs, after the residual add")
    assert "method = \"gradient\"" in notes[-1]
    with torch.device("meta"):
        model = torchvision.models.convnext_tiny()
    found = checked_layers(model, SIZE, (), "model 'x'")
    assert [layer.out_shape[0] for layer in found] == [96] * 3 + [192] * 3 + [384] * 9 + [768] * 3


@slow
def test_swin_has_no_defaults_and_says_why(capsys) -> None:
    """A transformer works channels-last (attention windows) from its patch embedding on: no
    feature map after it has a known receptive field, so no default layer, and it says why."""
    rows, notes = _layers_command("swin_t", capsys)
    assert rows == []
    assert notes[0].startswith("swin_t: 12 of its 12 activation maps (GELU, from "
                               "features.1.0.mlp.1 on) are left out")
    assert notes[1].startswith("swin_t: no default layers")
    with torch.device("meta"):
        model = torchvision.models.swin_t()
    with pytest.raises(UserError, match=r"^model 'x': has no default layers to analyse \(12 of "
                       r"its 12 activation maps \(GELU.*layers --all"):
        checked_layers(model, SIZE, (), "model 'x'")


@slow
def test_regnet_y_defaults_stop_at_its_first_gate(capsys) -> None:
    """Its ReLUs have a rule, but the squeeze-excitation gate's own ReLU (a 1 x 1 map of channel
    weights) is no feature map, and after the gate every unit sees the whole image."""
    rows, notes = _layers_command("regnet_y_400mf", capsys)
    assert [row[1] for row in rows] == ["stem.2", "trunk_output.block1.block1-0.f.a.2",
                                        "trunk_output.block1.block1-0.f.b.2"]
    assert {_mark(row) for row in rows} == {"yes"}
    assert len(notes) == 1 and "(trunk_output.block1.block1-0.f.se)" in notes[0]


@slow
def test_mobilenet_v3_marks_relu_layers_behind_a_hardswish(capsys) -> None:
    rows, notes = _layers_command("mobilenet_v3_small", capsys)
    assert [(row[1], _mark(row)) for row in rows] == [
        ("features.0.2", "no: Hardswish"),
        ("features.1.block.0.2", "no: Hardswish in features.0.2")]  # a ReLU after the stem
    assert len(notes) == 2 and 'method = "gradient"' in notes[-1]


@slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "googlenet", "efficientnet_b0",
                                  "regnet_y_400mf"])
def test_every_default_is_a_channels_first_map_of_its_module(name: str) -> None:
    """The recorded (C, H, W) is the module's real output [1, C, H, W] on a real forward."""
    torch.manual_seed(0)
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    found = analysable_layers(model, (SIZE, SIZE))
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [modules[layer.name].register_forward_hook(
        lambda module, args, output, name=layer.name: shapes.__setitem__(name, output.shape))
        for layer in found]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, SIZE, SIZE))
    finally:
        for handle in handles:
            handle.remove()
    assert found and all(len(shapes[layer.name]) == 4 for layer in found)
    assert all(tuple(shapes[layer.name][1:]) == layer.out_shape for layer in found)


class _Functional(nn.Module):
    """A conv block like GoogLeNet's BasicConv2d: it returns a functional relu."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class _Mixed(nn.Module):
    """Every way a block can end: a functional-relu block, an nn.ReLU module reused twice, a
    SiLU module, a functional relu that no module returns, and a squeeze-excitation gate (whose
    1 x 1 ReLU map still has a known field: the global pool's)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _Functional(3, 4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.se = SqueezeExcitation(6, 2)
        self.conv4 = nn.Conv2d(4, 6, 3, padding=1)
        self.act = nn.SiLU()
        self.conv5 = nn.Conv2d(6, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x) + x)
        return self.se(F.relu(self.conv5(self.act(self.conv4(x)))))


def test_mixed_network_defaults_and_notes() -> None:
    """The block, the reused ReLU (once: its last call), the SiLU module; not the gate's inner
    maps; conv5's relu is returned by no module, so conv5 itself stands for its block."""
    model = _Mixed()
    found = analysable_layers(model, (16, 16))
    assert [(layer.label, layer.name) for layer in found] == [
        ("conv1", "block"), ("conv2", "relu"), ("conv3", "act"), ("conv4", "conv5")]
    assert [layer.out_shape for layer in found] == [(4, 16, 16)] * 2 + [(6, 16, 16)] * 2
    # a ReLU among them, and every map has a field; conv5's own map is the raw conv output
    assert default_notes(model, (16, 16)) == [
        "1 of its defaults (conv5) are raw convolution outputs: no module returns an activation "
        "after them (a rectifier called in a forward that goes on, or none); wrap it in a "
        "module (nn.ReLU) to analyse the rectified map"]
    assert all(m.training for m in model.modules())  # the trace restored the flags


@pytest.mark.parametrize(("activation", "notes"), [
    (nn.Hardtanh(0.0, 3.0), []),  # a capped rectifier: the deconvnet has a rule
    (nn.SiLU(), ["its activations are SiLU, for which the deconvnet has no rule: the defaults "
                 "are its SiLU outputs, not rectified ones"]),
])
def test_notes_say_when_the_defaults_are_not_rectified(activation: nn.Module,
                                                       notes: list[str]) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), activation)
    assert [layer.name for layer in analysable_layers(model, (8, 8))] == ["2"]
    assert default_notes(model, (8, 8)) == notes
