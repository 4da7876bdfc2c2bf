"""Nonlinearities written as arithmetic (pipeline.interp.signals): a product or quotient of two
signals of the image is refused for deconvnet and guided, naming the operation and its module;
a rectifier written with a mask of its own input gets the rule exactly (checked against the same
network with `nn.ReLU`); any other mask computed from the image is refused; products with
constants, parameters and buffers stay linear."""

from __future__ import annotations

import operator
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum_reference import best_unit, compare_with_captum
from small_models import Called
from torch import nn

from pipeline.errors import UserError
from pipeline.interp import Projector, analysable_layers
from pipeline.interp.layers import default_notes
from pipeline.interp.rules import Nonlinearities, refusal, unruled_layers

SIZE = 20


class Net(nn.Module):
    """conv -> act -> conv -> act -> conv -> nn.ReLU, the signal scaled so that every
    activation has units on both sides of zero; layer "act" is the second call of ``act``."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3)
        self.act, self.conv3, self.out = act, nn.Conv2d(6, 6, 3), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv3(self.act(self.conv2(self.act(self.conv1(x) * 8)) * 8)))


def _net(fn, seed: int = 3) -> Net:
    torch.manual_seed(seed)
    return Net(Called(fn)).eval()


def _project(model: nn.Module, method: str, layer: str = "out",
             chosen_by: nn.Module | None = None) -> torch.Tensor:
    """The projections of the strongest unit of ``layer`` (as ``chosen_by`` computes it,
    default ``model``) in each of two random images."""
    torch.manual_seed(11)
    x = torch.rand(2, 3, SIZE, SIZE)
    best = [best_unit(chosen_by or model, layer, image[None]) for image in x]
    return Projector(model, method).project(x, layer, torch.tensor([c for c, _, _ in best]),
                                            torch.tensor([[y, xx] for _, y, xx in best]))


def _refusal(kind: str, reason: str, method: str) -> str:
    return (f"layer 'out': its backward path crosses {kind} (in act), {reason}, for "
            f"which {method} has no rule; use method = \"gradient\" for this model, or analyse "
            "layers before it")


PRODUCT = "a product of two signals that both depend on the image"
QUOTIENT = "a quotient of two signals that both depend on the image"
MASKED = ("with a mask computed from the image without a gradient (a comparison, indices, a "
          "detached copy) other than a ReLU's own x > 0")


def _in_place_product(x: torch.Tensor) -> torch.Tensor:
    x = x + 1
    x *= x.mean(1, keepdim=True)
    return x


PRODUCTS = {  # written -> (function, the operation named)
    "hand-written h-swish x * F.relu6(x + 3) / 6": (lambda x: x * F.relu6(x + 3) / 6, "mul"),
    "x * x": (lambda x: x * x, "mul"),
    "torch.mul(x, x + 1)": (lambda x: torch.mul(x, x + 1), "mul"),
    "operator.mul(x, x)": (lambda x: operator.mul(x, x), "mul"),
    "x *= x.mean(1, keepdim=True)": (_in_place_product, "mul"),
    "x / x.norm(dim=1, keepdim=True)": (lambda x: x / x.norm(dim=1, keepdim=True), "div"),
    "torch.div(x, x.sum(1, keepdim=True) + 50)": (
        lambda x: torch.div(x, x.sum(1, keepdim=True) + 50), "div"),
    "x @ x": (lambda x: x @ x, "matmul"),
    "torch.einsum(nchw,nchw->nchw)": (lambda x: torch.einsum("nchw,nchw->nchw", x, x),
                                      "einsum"),
    "torch.addcmul(x, x, x)": (lambda x: torch.addcmul(x, x, x), "addcmul"),
}


@pytest.mark.parametrize("written", sorted(PRODUCTS))
@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_a_product_of_two_signals_is_refused_naming_it(written: str, method: str) -> None:
    fn, kind = PRODUCTS[written]
    model = _net(fn)
    reason = QUOTIENT if kind == "div" else PRODUCT
    with pytest.raises(UserError) as refused:
        _project(model, method)
    assert str(refused.value) == _refusal(kind, reason, method)
    marks = unruled_layers(model, (SIZE, SIZE), ["conv1", "act", "out"])  # as preflight does
    assert marks["conv1"] is None
    assert (marks["act"].kind, marks["act"].module) == (marks["out"].kind, "act") == (kind, "act")
    assert refusal("out", method, marks["out"]) == _refusal(kind, reason, method)


@pytest.mark.parametrize("written", ["hand-written h-swish x * F.relu6(x + 3) / 6", "x * x"])
def test_the_gradient_projects_a_product_of_two_signals(written: str) -> None:
    model = _net(PRODUCTS[written][0])
    got = _project(model, "gradient")
    assert torch.isfinite(got).all() and got.abs().amax(dim=(1, 2, 3)).min() > 0


def _square(x: torch.Tensor) -> torch.Tensor:
    return x * x


def test_a_product_the_rules_cannot_see_is_found_on_the_graph() -> None:
    """Run by TorchScript, ``x * x`` never reaches the function mode; its autograd node, with
    both operands leading back to the image, still refuses the layer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, not gone
        model = _net(torch.jit.script(_square))
    with pytest.raises(UserError) as refused:
        _project(model, "deconvnet")
    assert str(refused.value) == (
        f"layer 'out': its backward path crosses mul (where the rules cannot see it), {PRODUCT}, "
        "for which deconvnet has no rule; use method = \"gradient\" for this model, or analyse "
        "layers before it")


class Gate(nn.Module):
    """A gate written by hand: x * (F.relu6(s + 3) / 6), s from the pooled map (MobileNet v3's
    squeeze-and-excitation, without its Hardsigmoid module)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc(F.adaptive_avg_pool2d(x, 1))
        return x * (F.relu6(s + 3) / 6)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


def test_a_hand_written_gate_is_refused_as_a_product_and_a_sigmoid_gate_by_its_sigmoid() -> None:
    torch.manual_seed(5)
    for gate, kind, reason in ((Gate(6), "mul", f", {PRODUCT}"), (SqueezeExcitation(6),
                                                                  "sigmoid", "")):
        model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), gate, nn.Conv2d(6, 6, 3),
                              nn.ReLU()).eval()
        marks = unruled_layers(model, (SIZE, SIZE), ["1", "4"])
        assert marks["1"] is None and (marks["4"].kind, marks["4"].module) == (kind, "2")
        message = (f"layer '4': its backward path crosses {kind} (in 2){reason}, for which "
                   "guided has no rule; use method")
        with pytest.raises(UserError, match=f"^{re.escape(message)}"):
            Projector(model, "guided").project(torch.rand(1, 3, SIZE, SIZE), "4",
                                               torch.tensor([0]), torch.tensor([[1, 1]]))


class Scaled(nn.Module):
    """Products with what does not depend on the image: numbers, a parameter, a buffer, a
    parameter's exp; and F.normalize across channels (a normalisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, 6, 1, 1), 1.5))
        self.register_buffer("shift", torch.full((1, 6, 1, 1), 0.25))
        self.log_gain = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 0.5 / 6 * self.scale
        x = torch.mul(x, self.shift) * self.log_gain.exp()
        x.mul_(self.scale)
        return F.normalize(x, dim=1) + x / self.shift


def test_products_with_constants_parameters_and_buffers_keep_the_rule() -> None:
    model = _net(None)
    model.act = nn.Sequential(nn.ReLU(), Scaled())  # rectified, then only linear arithmetic
    assert set(unruled_layers(model, (SIZE, SIZE), ["act", "conv3", "out"]).values()) == {None}
    compare_with_captum(model, ["act", "out"], SIZE)


def _relu_by_setitem(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[x < 0] = 0
    return x


def _relu_by_in_place_mask(x: torch.Tensor) -> torch.Tensor:
    x = x + 0
    x *= x > 0
    return x


MASK_RECTIFIERS = {
    "x * (x > 0)": lambda x: x * (x > 0),
    "x * (x > 0).float()": lambda x: x * (x > 0).float(),
    "x * (x >= 0)": lambda x: x * (x >= 0),
    "(0 < x) * x": lambda x: (0 < x) * x,
    "x * ~(x <= 0)": lambda x: x * ~(x <= 0),
    "x * (1 - (x < 0).float())": lambda x: x * (1 - (x < 0).float()),
    "torch.where(x > 0, x, 0)": lambda x: torch.where(x > 0, x, 0),
    "torch.where(x > 0, x, torch.zeros_like(x))": lambda x: torch.where(x > 0, x,
                                                                        torch.zeros_like(x)),
    "torch.where(x <= 0, 0.0, x)": lambda x: torch.where(x <= 0, 0.0, x),
    "x.where(x > 0, 0)": lambda x: x.where(x > 0, 0),
    "x.masked_fill(x < 0, 0)": lambda x: x.masked_fill(x < 0, 0),
    "x.masked_fill(x <= 0, 0.0)": lambda x: x.masked_fill(x <= 0, 0.0),
    "x[x < 0] = 0": _relu_by_setitem,
    "x *= x > 0": _relu_by_in_place_mask,
    "torch.maximum(x, torch.zeros_like(x))": lambda x: torch.maximum(x, torch.zeros_like(x)),
}


@pytest.mark.parametrize("written", sorted(MASK_RECTIFIERS))
def test_a_rectifier_written_as_a_mask_gets_the_rule_exactly(written: str) -> None:
    model = _net(MASK_RECTIFIERS[written])
    reference = _net(None)
    reference.act = nn.ReLU()
    reference.load_state_dict(model.state_dict())
    assert set(unruled_layers(model, (SIZE, SIZE), ["act", "out"]).values()) == {None}
    got = {}
    for method in ("deconvnet", "guided", "gradient"):
        for layer in ("act", "out"):
            got[method, layer] = ours = _project(model, method, layer, reference)
            expected = _project(reference, method, layer)
            assert ours.abs().max() > 0
            assert (ours - expected).abs().max() <= 1e-6, (method, layer)
    assert not torch.allclose(got["deconvnet", "out"], got["gradient", "out"])
    assert not torch.allclose(got["guided", "out"], got["gradient", "out"])


def test_a_module_returning_a_mask_rectifier_is_a_rectified_default_layer() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), Called(lambda x: x * (x > 0)), nn.Conv2d(6, 6, 3),
                          Called(lambda x: x.masked_fill(x < 0, 0)))
    assert [layer.name for layer in analysable_layers(model, (SIZE, SIZE))] == ["1", "3"]
    assert default_notes(model, (SIZE, SIZE)) == []


def _compared_then_changed(x: torch.Tensor) -> torch.Tensor:
    mask = x > 0
    x = x + 0
    x.add_(0.5)  # the mask is no longer this signal's
    return x * mask


def _scaled_without_gradient(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        scale = x.mean((2, 3), keepdim=True)
    return x * scale


MASKS = {  # written -> the operation named
    "x * (x > 0.5)": (lambda x: x * (x > 0.5), "mul"),
    "x * (x < 0)": (lambda x: x * (x < 0), "mul"),
    "x * x.detach()": (lambda x: x * x.detach(), "mul"),
    "x * (x.mean(1, keepdim=True) > 0)": (lambda x: x * (x.mean(1, keepdim=True) > 0), "mul"),
    "torch.where(x > 0, x, 0.1 * x)": (lambda x: torch.where(x > 0, x, 0.1 * x), "where"),
    "x.masked_fill(x > 0, 0)": (lambda x: x.masked_fill(x > 0, 0), "masked_fill"),
    "x.gather(1, x.argmax(1, keepdim=True))": (
        lambda x: x.gather(1, x.argmax(1, keepdim=True)).expand_as(x).contiguous(), "gather"),
    "mask taken before an in-place change": (_compared_then_changed, "mul"),
    "x * s, s computed under no_grad": (_scaled_without_gradient, "mul"),
}


@pytest.mark.parametrize("written", sorted(MASKS))
def test_a_mask_of_the_image_that_is_no_rectifier_is_refused(written: str) -> None:
    fn, kind = MASKS[written]
    model = _net(fn)
    for method in ("deconvnet", "guided"):
        with pytest.raises(UserError) as refused:
            _project(model, method)
        assert str(refused.value) == _refusal(kind, MASKED, method)
    assert unruled_layers(model, (SIZE, SIZE), ["conv1"]) == {"conv1": None}
    assert torch.isfinite(_project(model, "gradient")).all()  # the gradient has no rule to miss


class PrunedWeights(nn.Module):
    """A mask of a parameter (weights pruned by magnitude): no function of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv.weight * (self.conv.weight.abs() > 0.1)
        return F.conv2d(x, weight, self.conv.bias)


def test_a_mask_of_parameters_is_a_constant() -> None:
    model = _net(None)
    model.act = nn.Sequential(nn.ReLU(), PrunedWeights())
    assert unruled_layers(model, (SIZE, SIZE), ["act", "out"]) == {"act": None, "out": None}
    compare_with_captum(model, ["out"], SIZE)


def test_a_pass_s_masks_are_forgotten_when_the_next_pass_begins() -> None:
    """The projector clears ``normalised`` before each pass: the masks go too (they hold the
    autograd nodes of the pass's graph)."""
    mode = Nonlinearities("deconvnet")
    x = torch.rand(4, requires_grad=True) - 0.5
    with mode:
        mask = x > 0
        y = x * mask
    assert mode.signals.mask(mask) is not None
    assert y.grad_fn is not None and "Rectify" in type(y.grad_fn).__name__  # the rule
    mode.normalised.clear()
    assert mode.signals.mask(mask) is None
