"""The projector against captum's reference deconvnet / guided backprop and hand computations.

Captum hooks ReLUs with a forward pre-hook that CLONES the input, so torchvision's in-place ReLUs
(AlexNet, VGG, ResNet) are handled on a copy and its reference is the true rule; the engine
rectifies in place as the model asks (see pipeline/interp/rules.py). `test_captum_inplace_is_
apples_to_apples` checks that
captum gives the same answer on an out-of-place copy of the model, so the comparison is fair.
Captum differentiates the whole model output path to the neuron and applies the rule at the
layer's own ReLU too; with a positive unit that is the identity, so units are chosen positive.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from captum_reference import CAPTUM, best_unit, compare_with_captum
from torch import nn

from pipeline.errors import UserError
from pipeline.interp import Projector
from pipeline.interp import projector as projector_module


def _model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).eval()


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    return _model("alexnet")


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    return _model("vgg16")


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return _model("resnet18")


ALEXNET_RELUS = ["features.1", "features.4", "features.7", "features.9", "features.11"]


@pytest.mark.slow
def test_alexnet_matches_captum(alexnet: nn.Module) -> None:
    compare_with_captum(alexnet, ALEXNET_RELUS, 128)


@pytest.mark.slow
def test_vgg16_matches_captum(vgg16: nn.Module) -> None:
    relus = [n for n, m in vgg16.features.named_modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 13
    compare_with_captum(vgg16, [f"features.{n}" for n in relus], 64)


def test_resnet18_matches_captum(resnet18: nn.Module) -> None:
    # layer1.1.relu is called twice per forward; both tools record its last call.
    compare_with_captum(resnet18, ["layer2", "layer1.1.relu"], 64)


def test_captum_inplace_is_apples_to_apples(alexnet: nn.Module) -> None:
    outplace = copy.deepcopy(alexnet)
    for m in outplace.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.rand(1, 3, 128, 128)
    c, y, xx = best_unit(alexnet, "features.4", x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in CAPTUM.values():
            a = cls(alexnet, alexnet.features[4]).attribute(x.clone(), neuron_selector=(c, y, xx))
            b = cls(outplace, outplace.features[4]).attribute(
                x.clone(), neuron_selector=(c, y, xx))
            assert torch.allclose(a, b, rtol=0, atol=1e-6 * float(b.abs().max()))
    assert all(m.inplace for m in alexnet.modules() if isinstance(m, nn.ReLU))


def test_gradient_equals_autograd(alexnet: nn.Module) -> None:
    x = torch.rand(2, 3, 128, 128)
    units, positions = torch.tensor([5, 17]), torch.tensor([[3, 4], [1, 6]])
    ours = Projector(alexnet, "gradient").project(x, "features.7", units, positions)
    for b in range(2):
        xb = x[b:b + 1].clone().requires_grad_(True)
        act = alexnet.features[:8](xb)[0, units[b], positions[b, 0], positions[b, 1]]
        (grad,) = torch.autograd.grad(act, xb)
        # The seed is the activation's value: gradient scaled by it.
        expected = grad * act.detach()
        assert torch.allclose(ours[b:b + 1], expected, rtol=1e-5,
                              atol=1e-6 * float(expected.abs().max()))


def _tiny_pool_model() -> nn.Module:
    conv = nn.Conv2d(3, 2, kernel_size=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
        conv.weight[0, 2] = torch.tensor([[0.0, 1.0], [-3.0, 0.0]])
        conv.weight[1] = 1.0
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.MaxPool2d(2))


def test_hand_weighted_conv_relu_pool_exact() -> None:
    model = _tiny_pool_model()
    x = torch.zeros(1, 3, 5, 5)
    x[0, 0, 1, 2] = 4.0
    # conv0[i, j] = sum w[0, c, di, dj] * x[c, i + di, j + dj]: pixel (1, 2) reaches (1, 2) with
    # weight 1, (1, 1) with -1, (0, 2) with 2 and (0, 1) with 0.5.
    conv_out = model[0](x)[0, 0]
    assert conv_out[0, 2] == 8.0 and conv_out[1, 1] == -4.0 and conv_out[1, 2] == 4.0
    # Pool unit (0, 1) sees conv rows 0-1, cols 2-3: the max, 8, is at (0, 2) (the switch).
    for method in ("deconvnet", "guided", "gradient"):
        proj = Projector(model, method).project(
            x, "2", torch.tensor([0]), torch.tensor([[0, 1]]))
        expected = torch.zeros(1, 3, 5, 5)
        expected[0, :, 0:2, 2:4] = 8.0 * model[0].weight[0].detach()  # seed 8 through conv^T
        assert torch.equal(proj, expected), method


def test_three_rules_differ_exactly() -> None:
    """1x1 convs, hidden = (x0, -x1, x2): one ReLU off, and signals of both signs."""
    a = nn.Conv2d(3, 3, 1, bias=False)
    b = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.diag(torch.tensor([1.0, -1.0, 1.0])).view(3, 3, 1, 1))
        b.weight.copy_(torch.tensor([2.0, -5.0, -3.0]).view(1, 3, 1, 1))
    model = nn.Sequential(a, nn.ReLU(inplace=True), b)
    x = torch.ones(1, 3, 1, 1)  # hidden (1, -1, 1) -> relu (1, 0, 1); out = 2 - 3 = -1 = seed
    units, pos = torch.tensor([0]), torch.tensor([[0, 0]])
    got = {m: Projector(model, m).project(x, "2", units, pos)[0, :, 0, 0].tolist()
           for m in ("deconvnet", "guided", "gradient")}
    # Signal reaching the ReLU: -1 * (2, -5, -3) = (-2, 5, 3); back through `a` = diag(1,-1,1).
    assert got["gradient"] == [-2.0, 0.0, 3.0]  # forward mask (1, 0, 1)
    assert got["guided"] == [0.0, 0.0, 3.0]  # rectify and mask
    assert got["deconvnet"] == [0.0, -5.0, 3.0]  # rectify only (the paper's rule)


def test_batch_chunks_and_shared_forward_equal_single_requests(resnet18: nn.Module) -> None:
    torch.manual_seed(2)
    base = torch.rand(3, 3, 64, 64)
    images = base[torch.tensor([0, 0, 0, 1, 1, 2, 0, 1])]
    units = torch.tensor([1, 7, 30, 2, 99, 5, 64, 3])
    positions = torch.tensor([[1, 1], [2, 3], [0, 0], [7, 7], [4, 2], [3, 3], [5, 6], [2, 2]])
    one_by_one = torch.cat([
        Projector(resnet18, "deconvnet").project(
            images[i:i + 1], "layer2.0", units[i:i + 1], positions[i:i + 1])
        for i in range(8)
    ])
    shared = Projector(resnet18, "deconvnet", batch_size=64).project(
        images, "layer2.0", units, positions)
    chunked = Projector(resnet18, "deconvnet", batch_size=3).project(
        images, "layer2.0", units, positions)
    scale = float(one_by_one.abs().max())
    assert scale > 0
    for got in (shared, chunked):
        assert got.dtype == torch.float32 and got.shape == images.shape
        # float32 sums in another order: a few 1e-6 of the scale on some CPUs' kernels; a
        # request paired with another image, unit or position is off by the scale itself
        assert torch.allclose(got, one_by_one, rtol=0, atol=1e-5 * scale)
    # Sharing really happened: 3 distinct images, 4 rounds; and the grouping is right.
    base_images, inverse, rounds = projector_module._share(images)
    assert base_images.shape[0] == 3
    assert inverse.tolist() == [0, 0, 0, 1, 1, 2, 0, 1]
    assert rounds.tolist() == [0, 1, 2, 0, 1, 0, 3, 2]


def test_share_not_used_when_it_does_not_pay() -> None:
    images = torch.rand(4, 3, 8, 8)
    images[1] = images[0]
    base, inverse, rounds = projector_module._share(images)
    assert base is images and inverse.tolist() == [0, 1, 2, 3] and rounds.tolist() == [0] * 4


def test_params_get_no_grad_and_input_untouched(alexnet: nn.Module) -> None:
    x = torch.rand(1, 3, 128, 128)
    Projector(alexnet).project(x, "features.4", torch.tensor([0]), torch.tensor([[2, 2]]))
    assert not x.requires_grad and x.grad is None
    assert all(p.grad is None for p in alexnet.parameters())


def test_unknown_method_lists_methods(alexnet: nn.Module) -> None:
    with pytest.raises(ValueError, match="deconvnet.*guided.*gradient"):
        Projector(alexnet, "lrp")


def test_unknown_layer_lists_names(alexnet: nn.Module) -> None:
    with pytest.raises(UserError, match=r"features\.0.*in all"):
        Projector(alexnet).project(torch.rand(1, 3, 64, 64), "features.99",
                                   torch.tensor([0]), torch.tensor([[0, 0]]))


class _Reuse(nn.Module):
    """One ReLU module called twice; optionally with data-dependent control flow (no fx)."""

    def __init__(self, traceable: bool) -> None:
        super().__init__()
        self.traceable = traceable
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.traceable and x.sum() > 0:
            x = x + 0.0
        return self.relu(self.conv2(self.relu(self.conv1(x))))


@pytest.mark.parametrize("traceable", [True, False])
def test_reused_relu_records_its_last_call(traceable: bool) -> None:
    torch.manual_seed(3)
    model = _Reuse(traceable)
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        out = model.relu(model.conv2(model.relu(model.conv1(x))))[0]
    c, y, xx = (int(v) for v in torch.unravel_index(out.argmax(), out.shape))
    ours = Projector(model, "gradient").project(x, "relu", torch.tensor([c]),
                                                torch.tensor([[y, xx]]))
    xg = x.clone().requires_grad_(True)
    act = torch.relu(model.conv2(torch.relu(model.conv1(xg))))[0, c, y, xx]
    (grad,) = torch.autograd.grad(act, xg)
    assert ours.shape == (1, 3, 9, 9)  # the 5x5 second call, not the 7x7 first
    assert torch.allclose(ours, grad * act.detach(), rtol=1e-5, atol=1e-7)
