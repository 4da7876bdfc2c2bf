"""The deconvnet and guided rules on rectifiers called as functions (F.relu, torch.relu, relu_,
F.relu6) and as ReLU6 modules, against Captum on a copy whose rectifiers are `nn.ReLU` modules;
and the refusal of layers whose backward path crosses a nonlinearity without a rule.

The references: torchvision's GoogLeNet and Inception v3 end every `BasicConv2d` in
`F.relu(bn(conv(x)), inplace=True)`, which becomes `Sequential(conv, bn, nn.ReLU())`; a ReLU6 is
`ReLU` then a cap at 6 (`Sequential(nn.ReLU(), Cap(6))`), which is the rule's definition (see
the docstring of pipeline.interp.rules)."""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum_reference import best_unit, compare_with_captum, layer_output
from small_models import Called
from torch import nn

from pipeline.errors import UserError
from pipeline.interp import Projector
from pipeline.interp.rules import unruled_layers


class Cap(nn.Module):
    """min(x, cap): the part of ReLU6 after the ReLU; its gradient is 0 where saturated."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, max=self.cap)


def _with_relu_modules(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every rectifier is an `nn.ReLU` module, so Captum applies."""
    reference = copy.deepcopy(model)
    for name, module in list(reference.named_modules()):
        if type(module).__name__ == "BasicConv2d":  # googlenet, inception: F.relu(bn(conv))
            swapped = nn.Sequential(module.conv, module.bn, nn.ReLU())
        elif isinstance(module, nn.ReLU6):
            swapped = nn.Sequential(nn.ReLU(), Cap(6.0))
        else:
            continue
        parent, _, child = name.rpartition(".")
        setattr(reference.get_submodule(parent) if parent else reference, child, swapped)
    return reference


def _torchvision(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **options).eval()


@pytest.mark.slow
def test_googlenet_functional_relus_match_captum() -> None:
    model = _torchvision("googlenet", aux_logits=False, init_weights=True)
    compare_with_captum(model, ["conv2", "inception3b", "inception4c"], 96,
                        _with_relu_modules(model))


@pytest.mark.slow
def test_inception_v3_functional_relus_match_captum() -> None:
    model = _torchvision("inception_v3", aux_logits=False, init_weights=True)
    compare_with_captum(model, ["Conv2d_2b_3x3", "Mixed_5b", "Mixed_6a"], 96,
                        _with_relu_modules(model))


@pytest.mark.slow
def test_mobilenet_v2_relu6_matches_captum() -> None:
    model = _torchvision("mobilenet_v2")
    reference = _with_relu_modules(model)
    assert not any(isinstance(m, nn.ReLU6) for m in reference.modules())
    compare_with_captum(model, ["features.0.2", "features.3.conv.0.2", "features.7.conv.1.2"],
                        64, reference)


class Mixed(nn.Module):
    """Every way of rectifying in one network: F.relu, an nn.ReLU module after a residual add,
    torch.relu_ in place, F.relu6, an in-place ReLU6 module (a hardtanh(0, 6))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 8, 3)
        self.conv4 = nn.Conv2d(8, 8, 3)
        self.conv5 = nn.Conv2d(8, 8, 3)
        self.relu6 = nn.ReLU6(inplace=True)
        self.conv6 = nn.Conv2d(8, 8, 3)
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        x = F.max_pool2d(x, 2)
        x = torch.relu_(self.conv3(x) * 3)
        x = F.relu6(self.conv4(x) * 10)
        x = self.relu6(self.conv5(x) * 10)
        return self.out(self.conv6(x))


class MixedReference(Mixed):
    """`Mixed` with every rectifier an `nn.ReLU` module (and caps)."""

    def __init__(self) -> None:
        super().__init__()
        self.r1, self.r3, self.r4 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.relu6 = nn.Sequential(nn.ReLU(), Cap(6.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r1(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        x = F.max_pool2d(x, 2)
        x = self.r3(self.conv3(x) * 3)
        x = torch.clamp(self.r4(self.conv4(x) * 10), max=6.0)
        x = self.relu6(self.conv5(x) * 10)
        return self.out(self.conv6(x))


def test_a_network_mixing_functional_and_module_relus_matches_captum() -> None:
    torch.manual_seed(4)
    model = Mixed().eval()
    reference = MixedReference().eval()
    reference.load_state_dict(model.state_dict())
    # the cap at 6 is reached and not reached: the comparison covers saturated units
    torch.manual_seed(1)
    x = torch.rand(1, 3, 24, 24)
    for layer in ("conv4", "conv5"):
        before_cap = layer_output(model, layer, x) * 10
        assert (before_cap > 6).any() and ((before_cap > 0) & (before_cap < 6)).any()
    compare_with_captum(model, ["relu", "conv5", "out"], 24, reference, seed=1)


def test_the_rules_change_the_functional_relu_network() -> None:
    """Not the plain gradient any more: the three methods differ on `Mixed`."""
    torch.manual_seed(4)
    model = Mixed().eval()
    x = torch.rand(1, 3, 24, 24)
    c, y, xx = best_unit(model, "out", x)
    got = {method: Projector(model, method).project(x, "out", torch.tensor([c]),
                                                    torch.tensor([[y, xx]]))
           for method in ("deconvnet", "guided", "gradient")}
    assert not torch.allclose(got["deconvnet"], got["gradient"])
    assert not torch.allclose(got["guided"], got["gradient"])


def test_in_place_functional_relu_keeps_the_model_untouched() -> None:
    torch.manual_seed(5)
    model = Mixed().eval()
    before = copy.deepcopy(model.state_dict())
    x = torch.rand(2, 3, 24, 24)
    kept = x.clone()
    Projector(model, "guided").project(x, "out", torch.tensor([0, 1]),
                                       torch.tensor([[1, 1], [2, 2]]))
    assert torch.equal(x, kept)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.relu6.inplace  # the module's own flag is not touched


def _gated(activation: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), activation,
                         nn.Conv2d(4, 4, 3), nn.ReLU())


@pytest.mark.parametrize(("activation", "kind"), [(nn.SiLU(), "SiLU"), (nn.GELU(), "GELU"),
                                                  (nn.Hardswish(), "Hardswish")])
@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_layers_behind_a_nonlinearity_without_a_rule_are_refused(activation, kind, method):
    torch.manual_seed(6)
    model = _gated(activation).eval()
    x = torch.rand(1, 3, 12, 12)
    with pytest.raises(UserError) as refused:
        Projector(model, method).project(x, "5", torch.tensor([0]), torch.tensor([[1, 1]]))
    message = str(refused.value)
    assert "\n" not in message
    assert f"crosses {kind} (in 3)" in message and "'5'" in message
    assert 'method = "gradient"' in message
    # before it the rule applies; the gradient goes everywhere
    for layer, projector in (("1", Projector(model, method)), ("5", Projector(model, "gradient"))):
        c, y, xx = best_unit(model, layer, x)
        assert projector.project(x, layer, torch.tensor([c]), torch.tensor([[y, xx]])).abs(
            ).max() > 0
    marks = unruled_layers(model, (12, 12), ["1", "3", "5"])
    assert marks["1"] is None and marks["3"].kind == marks["5"].kind == kind


def test_a_sigmoid_gate_is_named_with_its_module() -> None:
    model = torchvision.models.efficientnet_b0(weights=None).eval()
    with pytest.raises(UserError, match=r"crosses SiLU \(in features.0.2\)"):
        Projector(model, "deconvnet").project(torch.rand(1, 3, 32, 32), "features.1",
                                              torch.tensor([0]), torch.tensor([[0, 0]]))
    marks = unruled_layers(torchvision.models.regnet_y_400mf(weights=None),
                           (64, 64), ["stem", "trunk_output.block1"])
    assert marks["stem"] is None
    assert marks["trunk_output.block1"].kind == "sigmoid"
    assert marks["trunk_output.block1"].module.endswith("se.scale_activation")


def test_no_warning_on_a_plain_relu_network_first_layer() -> None:
    torch.manual_seed(7)
    model = torchvision.models.alexnet(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("deconvnet", "guided"):
            got = Projector(model, method).project(torch.rand(1, 3, 64, 64), "features.1",
                                                   torch.tensor([3]), torch.tensor([[2, 2]]))
            assert got.abs().max() > 0


def test_nothing_stays_installed_after_a_refusal() -> None:
    """The function mode and the module-stack hooks go with the projection, also after an
    error: the model and torch behave as before."""
    torch.manual_seed(8)
    model = _gated(nn.SiLU()).eval()
    with pytest.raises(UserError):
        Projector(model, "deconvnet").project(torch.rand(1, 3, 12, 12), "5", torch.tensor([0]),
                                              torch.tensor([[1, 1]]))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    (grad,) = torch.autograd.grad(F.relu(x), x, torch.tensor([5.0, -3.0]))
    assert grad.tolist() == [0.0, -3.0]  # autograd's own relu: masked, not rectified


class _Activation(nn.Module):
    """conv -> fn -> conv -> fn -> conv -> ReLU: ``fn`` is one way of writing an activation."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3)
        self.conv3, self.out = nn.Conv2d(6, 6, 3), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv3(self.fn(self.conv2(self.fn(self.conv1(x) * 8)) * 8)))


WRITTEN_AS = {  # rectifiers written otherwise, and the module reference Captum applies to
    "F.threshold(x, 0, 0)": (lambda t: F.threshold(t, 0, 0), nn.ReLU()),
    "nn.Threshold(0, 0)": (nn.Threshold(0, 0), nn.ReLU()),
    "x.clamp(min=0)": (lambda t: t.clamp(min=0), nn.ReLU()),
    "x.clamp_min(0)": (lambda t: t.clamp_min(0), nn.ReLU()),
    "torch.clamp(x, 0, 6)": (lambda t: torch.clamp(t, 0, 6), nn.Sequential(nn.ReLU(), Cap(6))),
    "F.hardtanh_(x, 0, 6)": (lambda t: F.hardtanh_(t, 0.0, 6.0),
                             nn.Sequential(nn.ReLU(), Cap(6))),
}


@pytest.mark.parametrize("written", sorted(WRITTEN_AS))
def test_rectifiers_written_otherwise_get_the_rule(written) -> None:
    fn, module = WRITTEN_AS[written]
    torch.manual_seed(9)
    model = _Activation(fn).eval()
    reference = _Activation(module).eval()
    reference.load_state_dict(model.state_dict(), strict=False)
    compare_with_captum(model, ["out"], 20, reference, seed=2)


@pytest.mark.parametrize(("fn", "kind"), [
    (lambda t: t * torch.special.expit(t), "sigmoid (in fn)"),  # a SiLU written by hand
    (lambda t: torch.exp(-t * t) * t, "exp (where the rules cannot see it)"),
    (lambda t: torch.clamp(t, min=-1.0), "clamp (where the rules cannot see it)"),
    (lambda t: torch.softmax(t, 1) * t, "softmax (where the rules cannot see it)"),
    (lambda t: F.relu(t).pow(2), "pow (where the rules cannot see it)"),  # pow outside a norm
])
def test_a_nonlinearity_the_rules_do_not_list_is_refused_too(fn, kind) -> None:
    model = _Activation(fn).eval()
    model.fn = Called(fn) if "sigmoid" in kind else fn
    with pytest.raises(UserError, match=rf"crosses {re.escape(kind)}, for which deconvnet"):
        Projector(model, "deconvnet").project(torch.rand(1, 3, 20, 20), "out",
                                              torch.tensor([0]), torch.tensor([[1, 1]]))


class _LaterInPlace(nn.Module):
    """A layer (``r``) gated in place after it ran, and a SiLU edited in place after the layer
    that reads it (``c2``) ran: the marks must follow the graph as it was at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.r, self.c2, self.c3 = (nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3),
                                             nn.Conv2d(4, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.r(self.c1(x))
        h2 = F.silu(h.clone())
        y = self.c2(h2)
        h.mul_(torch.sigmoid(y.mean()))  # after r ran: not on r's path
        h2.add_(1)  # after c2 ran: c2 still crosses the SiLU
        return self.c3(y) + h.mean()


def test_marks_follow_the_graph_as_it_was_when_each_layer_ran() -> None:
    model = _LaterInPlace().eval()
    marks = unruled_layers(model, (12, 12), ["r", "c2"])
    assert marks["r"] is None
    assert marks["c2"] is not None and marks["c2"].kind == "SiLU"


class _Normalised(nn.Module):
    """conv -> ReLU -> local response normalisation (AlexNet, ZFNet) -> conv -> GroupNorm ->
    ReLU -> LayerNorm over channels: normalisations pass the signal back as their gradient;
    F.local_response_norm is built of pow, which the graph check refuses anywhere else."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.relu1 = nn.ReLU()
        self.lrn = nn.LocalResponseNorm(5)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.gn = nn.GroupNorm(2, 8)
        self.relu2 = nn.ReLU()
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gn(self.conv2(self.lrn(self.relu1(self.conv1(x)))))
        x = self.relu2(x)
        x = F.layer_norm(x.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)
        return self.out(x)


def test_normalisations_pass_the_signal_back_as_captum_does() -> None:
    torch.manual_seed(4)
    model = _Normalised().eval()
    assert unruled_layers(model, (24, 24), ["relu2", "out"]) == {"relu2": None, "out": None}
    compare_with_captum(model, ["relu2", "out"], 24)
