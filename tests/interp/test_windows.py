"""Projection on windows (crops around the receptive field) equals the full-image projection.

Every test compares `Projector(windowed=True, cones=False)` with `Projector(windowed=False)`
(the full-image path that test_projector.py checks against captum) on real models with random
weights; the cones, which take precedence where a model has them, are test_cones.py's. The cost
rule is switched off (`_always_crop`) where a test is about exactness, so that layers whose
windows would not pay (e.g. AlexNet conv5) are still projected on windows; `_spy` proves the
window path ran.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torchvision
from torch import nn

from pipeline.interp import Projector, receptive_fields, windows
from pipeline.interp.receptive_field import ReceptiveField, clip_box
from pipeline.interp.windows import WindowPlan, window_span

ALEXNET_LAYERS = ["features.1", "features.4", "features.7", "features.9", "features.11"]


@pytest.fixture()
def _always_crop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "MAX_COST_FRACTION", float("inf"))


@pytest.fixture()
def _spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Number of requests projected on crops (the self-check's probes included)."""
    calls: list[int] = []
    real = windows.project_windows

    def spy(project_batch, images, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(images.shape[0])
        return real(project_batch, images, *args, **kwargs)

    monkeypatch.setattr(windows, "project_windows", spy)
    yield calls


def _model(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **kwargs).eval()


def _fmap(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, a, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[-1][0]


def _border_positions(h: int, w: int) -> list[tuple[int, int]]:
    """Centre, the four edge midpoints and the four corners."""
    ys, xs = (0, h // 2, h - 1), (0, w // 2, w - 1)
    return list(dict.fromkeys((y, x) for y in ys for x in xs))


def _requests(model: nn.Module, layer: str, x: torch.Tensor,
              positions: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
    """One request per position on image x, at the position's most active channel."""
    fmap = _fmap(model, layer, x)
    units = torch.stack([fmap[:, y, xx].abs().argmax() for y, xx in positions])
    assert all(fmap[int(u), y, xx] != 0 for u, (y, xx) in zip(units, positions, strict=True))
    n = len(positions)
    return x.expand(n, -1, -1, -1).clone(), units, torch.tensor(positions)


def _assert_same(model: nn.Module, layer: str, requests: tuple[torch.Tensor, ...],
                 method: str = "deconvnet", batch_size: int = 4) -> torch.Tensor:
    """Cropped (in batches of batch_size) equals full, per projection; returns the cropped."""
    images = requests[0]
    full = Projector(model, method, windowed=False).project(images, layer, *requests[1:])
    projector = Projector(model, method, batch_size=batch_size, cones=False)
    cropped = projector.project(images, layer, *requests[1:])
    assert projector._verified[(layer, images.shape[2], images.shape[3])] is not None
    for a, b in zip(full, cropped, strict=True):
        scale = float(a.abs().max())
        assert scale > 0
        assert float((a - b).abs().max()) <= 1e-5 * scale, layer
    return cropped


def _assert_zero_outside(proj: torch.Tensor, field: ReceptiveField,
                         positions: torch.Tensor) -> None:
    for p, (y, x) in zip(proj, positions.tolist(), strict=True):
        (top, left, bottom, right), _ = clip_box(field.box(y, x), tuple(p.shape[1:]))
        outside = torch.ones(p.shape[1:], dtype=torch.bool)
        outside[top:bottom, left:right] = False
        assert not p.abs().sum(0)[outside].any()


def test_window_span_contains_the_box_and_is_aligned() -> None:
    for size, jump, first, n in [(11, 4, -2, 224), (163, 16, -66, 224), (51, 8, -18, 98),
                                 (99, 8, -45, 160), (19, 8, -2, 50)]:
        window = size + jump - 1
        for y in range(-(first // jump) + n // jump + 2):
            start = first + y * jump
            if start >= n:
                break
            o, e = window_span(start, size, jump, n)
            assert o % jump == 0 and 0 <= o < e <= n
            assert o <= max(start, 0) and e >= min(start + size, n)  # the box, clipped
            assert e - o == window or e == n  # one interior extent; else ends at the image edge
            if e == n and window < n:
                assert e - o < window + jump  # one edge extent: o is the largest aligned start


def test_probes_are_active_units_nearest_centre_and_corners() -> None:
    strength = torch.rand(9, 7) + 0.1
    assert windows.probe_positions(strength) == [(4, 3), (8, 6), (0, 0)]
    strength[8, 6] = strength[0, :2] = 0  # inactive corners: their nearest active neighbours
    assert windows.probe_positions(strength) == [(4, 3), (7, 5), (1, 0)]
    assert windows.probe_positions(torch.zeros(3, 3)) == []


def test_cost_rule_is_the_area_rule_without_shared_images() -> None:
    plan = WindowPlan(ReceptiveField((99, 99), (16, 16), (-34, -34)), (224, 224))
    keys = list(range(4))  # four different images: nothing is shared
    boxes = [plan.box(6, 6)] * 4
    area = (boxes[0][2] - boxes[0][0]) * (boxes[0][3] - boxes[0][1])
    assert (area < 0.9 * 224 * 224) and plan.pays(keys, boxes, 64)
    big = WindowPlan(ReceptiveField((199, 199), (16, 16), (-82, -82)), (224, 224))
    assert not big.pays(keys, [big.box(6, 6)] * 4, 64)  # 214 x 214 crops: 91% of the image
    conv5 = WindowPlan(ReceptiveField((163, 163), (16, 16), (-66, -66)), (224, 224))
    boxes = [conv5.box(6, 6), conv5.box(6, 7), conv5.box(7, 6), conv5.box(7, 7)]  # 178 x 178
    assert conv5.pays(keys, boxes, 64)  # 4 images: 8 passes of 224^2 against 8 of 178^2
    assert not conv5.pays([0] * 4, boxes, 64)  # one image: the full path needs only 1 + 4


@pytest.mark.slow
@pytest.mark.usefixtures("_always_crop")
def test_alexnet_every_layer_centre_edges_corners(_spy: list[int]) -> None:
    model = _model("alexnet")
    torch.manual_seed(1)
    x = torch.rand(1, 3, 224, 224)
    fields = receptive_fields(model, (224, 224))
    for layer in ALEXNET_LAYERS:
        h, w = _fmap(model, layer, x).shape[1:]
        requests = _requests(model, layer, x, _border_positions(h, w))
        cropped = _assert_same(model, layer, requests)
        _assert_zero_outside(cropped, fields[layer], requests[2])
    assert sum(_spy) >= 9 * len(ALEXNET_LAYERS)


@pytest.mark.slow
@pytest.mark.usefixtures("_always_crop")
@pytest.mark.parametrize("method", ["guided", "gradient"])
def test_alexnet_masking_rules_at_160_px(method: str) -> None:
    """The guided / gradient masks use forward values of the whole cone, so they test it too."""
    model = _model("alexnet")
    torch.manual_seed(2)
    x = torch.rand(1, 3, 160, 160)
    for layer in ("features.4", "features.9"):
        h, w = _fmap(model, layer, x).shape[1:]
        _assert_same(model, layer, _requests(model, layer, x, _border_positions(h, w)), method)


@pytest.mark.slow
@pytest.mark.usefixtures("_always_crop")
def test_resnet18_downsample_branches(_spy: list[int]) -> None:
    model = _model("resnet18")
    torch.manual_seed(3)
    x = torch.rand(1, 3, 160, 160)
    for layer in ("layer2.0", "layer2"):  # stride-2 conv + 1x1 stride-2 downsample, merged
        h, w = _fmap(model, layer, x).shape[1:]
        _assert_same(model, layer, _requests(model, layer, x, _border_positions(h, w)))
    assert _spy


def _tiny_stack() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
    ).eval()


@pytest.mark.usefixtures("_always_crop")
@pytest.mark.parametrize("method", ["deconvnet", "guided", "gradient"])
def test_tiny_stack_every_unit_image_not_a_multiple_of_the_jump(method: str) -> None:
    model = _tiny_stack()
    x = torch.rand(1, 3, 94, 70, generator=torch.Generator().manual_seed(5))
    field = receptive_fields(model, (94, 70))["6"]
    assert field.jump == (8, 8) and 94 % 8 and 70 % 8
    h, w = _fmap(model, "6", x).shape[1:]
    positions = [(y, xx) for y in range(h) for xx in range(w)]  # every unit of the last conv
    requests = _requests(model, "6", x, positions)
    cropped = _assert_same(model, "6", requests, method, batch_size=8)
    _assert_zero_outside(cropped, field, requests[2])


class _SqueezeExcite(nn.Module):
    """conv - relu - SE (global mean -> 1x1 conv -> sigmoid, broadcast multiply) - conv - relu.

    The receptive-field analysis sees the broadcast multiply as elementwise (the global branch
    has no geometry), so only the self-check can tell that crops are not exact here."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.fc = nn.Conv2d(8, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = x * torch.sigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))
        return self.relu2(self.conv2(x))


@pytest.mark.usefixtures("_always_crop")
def test_squeeze_excitation_falls_back_and_stays_exact() -> None:
    torch.manual_seed(6)
    model = _SqueezeExcite().eval()
    x = torch.rand(3, 3, 48, 48)
    # The broadcast of a globally pooled scale has no local geometry, so no crop is tried.
    assert "relu2" not in receptive_fields(model, (48, 48))
    requests = (x, torch.tensor([0, 3, 5]), torch.tensor([[0, 0], [12, 12], [23, 5]]))
    # a sigmoid gate has no deconvnet rule: the geometry is what is tested, with the gradient
    projector = Projector(model, "gradient", cones=False)
    got = projector.project(*requests[:1], "relu2", *requests[1:])
    assert projector._verified.get(("relu2", 48, 48)) is None
    assert torch.equal(got, Projector(model, "gradient", windowed=False).project(
        x, "relu2", *requests[1:]))
    projector.project(x, "relu1", *requests[1:])  # before the broadcast: crops are fine
    assert projector._verified[("relu1", 48, 48)] is not None


@pytest.mark.usefixtures("_always_crop")
def test_mobilenet_v3_squeeze_excitation_stays_exact() -> None:
    """Geometry stops at the first SE block (features.1): after it the field is unknown and the
    full-image path runs; for features.1 itself `receptive_fields` reports the SE scale's 1x1
    geometry (jump 96 at 96 px), whose crops are the whole image. Both stay exact. (Hardswish
    and the SE gates have no guided rule: the geometry is tested with the gradient.)"""
    model = _model("mobilenet_v3_small")
    torch.manual_seed(7)
    x = torch.rand(2, 3, 96, 96)
    units = torch.tensor([1, 4])
    projector = Projector(model, "gradient", cones=False)
    for layer, positions in (("features.1", [[3, 20], [23, 0]]), ("features.2", [[3, 11], [0, 0]])):
        got = projector.project(x, layer, units, torch.tensor(positions))
        ref = Projector(model, "gradient", windowed=False).project(x, layer, units,
                                                            torch.tensor(positions))
        assert torch.equal(got, ref) and ref.abs().max() > 0
    assert projector._verified.get(("features.2", 96, 96)) is None


class _SizeChecking(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 40:
            raise ValueError("this model only takes 40-pixel images")
        return self.relu(self.conv(x))


@pytest.mark.usefixtures("_always_crop")
def test_model_rejecting_crops_falls_back() -> None:
    torch.manual_seed(8)
    model = _SizeChecking().eval()
    x = torch.rand(2, 3, 40, 40)
    args = ("relu", torch.tensor([0, 1]), torch.tensor([[20, 20], [0, 39]]))
    projector = Projector(model, cones=False)
    got = projector.project(x, *args)
    assert projector._verified[("relu", 40, 40)] is None
    assert torch.equal(got, Projector(model, windowed=False).project(x, *args))


def test_crops_used_by_default_where_they_pay(_spy: list[int]) -> None:
    model = _model("alexnet")
    x = torch.rand(4, 3, 160, 160, generator=torch.Generator().manual_seed(9))
    units, positions = torch.tensor([3, 8, 20, 40]), torch.tensor([[0, 0], [5, 9], [12, 3], [3, 3]])
    projector = Projector(model, cones=False)
    got = projector.project(x, "features.4", units, positions)
    assert _spy == [3, 4]  # the self-check's probes, then the four requests
    ref = Projector(model, windowed=False).project(x, "features.4", units, positions)
    assert torch.allclose(got, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    with pytest.raises(ValueError, match="request 0.*outside layer 'features.4'"):
        projector.project(x[:1], "features.4", units[:1], torch.tensor([[40, 0]]))
    # conv5 at 160 px: the field (163) exceeds the image, crops cannot pay, so no self-check.
    projector.project(x, "features.11", units, torch.tensor([[0, 0], [1, 1], [2, 2], [3, 3]]))
    assert _spy == [3, 4] and ("features.11", 160, 160) not in projector._verified
