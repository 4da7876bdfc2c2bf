"""The projector leaves the model exactly as it found it: hooks, in-place flags, training flags,
parameter grads, after success and after every kind of failing request."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules import module as module_globals

from pipeline.errors import UserError
from pipeline.interp import Projector

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
              "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_load_state_dict_pre_hooks")
GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                "_global_backward_pre_hooks")


def _snapshot(model: nn.Module) -> dict:
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if isinstance(m, nn.ReLU)},
        "hooks": {n: {d: len(getattr(m, d, {})) for d in HOOK_DICTS}
                  for n, m in model.named_modules()},
        "full_backward": {n: getattr(m, "_is_full_backward_hook", None)
                          for n, m in model.named_modules()},
        "globals": {g: len(getattr(module_globals, g, {})) for g in GLOBAL_HOOKS},
    }


def _assert_clean(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after == before
    assert all(sum(v.values()) == 0 for v in after["hooks"].values())
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture()
def alexnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None)
    model.train()
    model.features.eval()  # mixed flags: each module's own flag must come back
    return model


@pytest.fixture()
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).train()


def _request(layer: str, y: int = 1, x: int = 1, unit: int = 0) -> tuple:
    return (torch.rand(2, 3, 96, 96), layer, torch.tensor([unit, unit]),
            torch.tensor([[y, x], [0, 0]]))


def test_success_leaves_no_trace(alexnet: nn.Module) -> None:
    before = _snapshot(alexnet)
    assert before["inplace"] and all(before["inplace"].values())
    assert before["training"][""] and not before["training"]["features"]
    out = Projector(alexnet).project(*_request("features.3"))  # conv: nonzero seed
    assert out.abs().sum() > 0
    _assert_clean(alexnet, before)


def test_reused_relu_leaves_no_trace(resnet18: nn.Module) -> None:
    before = _snapshot(resnet18)
    Projector(resnet18, "guided").project(*_request("layer1.0.relu"))
    _assert_clean(resnet18, before)


@pytest.mark.parametrize("method", ["deconvnet", "guided", "gradient"])
def test_bad_layer_name_leaves_no_trace(alexnet: nn.Module, method: str) -> None:
    before = _snapshot(alexnet)
    with pytest.raises(UserError, match="unknown layer 'features.44'"):
        Projector(alexnet, method).project(*_request("features.44"))
    _assert_clean(alexnet, before)


def test_out_of_range_position_leaves_no_trace(alexnet: nn.Module) -> None:
    before = _snapshot(alexnet)
    with pytest.raises(ValueError, match="request 0.*outside layer 'features.4'"):
        Projector(alexnet).project(*_request("features.4", y=50))
    _assert_clean(alexnet, before)
    with pytest.raises(ValueError, match="outside"):
        Projector(alexnet).project(*_request("features.4", unit=192))
    _assert_clean(alexnet, before)


class _Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_exception_in_model_leaves_no_trace() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), _Exploding(),
                          nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True)).train()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        Projector(model).project(*_request("4"))
    _assert_clean(model, before)


class _WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.unused = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_layer_not_run_by_forward_leaves_no_trace() -> None:
    model = _WithUnused()
    before = _snapshot(model)
    with pytest.raises(UserError, match="'unused' ran 0 of 1 times"):
        Projector(model).project(*_request("unused"))
    _assert_clean(model, before)


def test_projector_reusable_after_failure(alexnet: nn.Module) -> None:
    projector = Projector(alexnet, "deconvnet")
    with pytest.raises(ValueError):
        projector.project(*_request("features.4", x=99))
    images, layer, units, positions = _request("features.4")
    first = projector.project(images, layer, units, positions)
    again = Projector(alexnet, "deconvnet").project(images, layer, units, positions)
    assert torch.equal(first, again)
