"""Analytic receptive fields against gradients, tile cropping, and the default layer set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum_reference import layer_output
from torch import nn

from pipeline.errors import UserError
from pipeline.interp import (
    ReceptiveField,
    analysable_layers,
    clip_box,
    field_tile,
    receptive_fields,
)


def _support(model: nn.Module, layer: str, x: torch.Tensor, c: int, y: int, xx: int) -> np.ndarray:
    """Boolean (H, W) map of input pixels whose gradient of unit (c, y, xx) is nonzero."""
    x = x.clone().requires_grad_(True)
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(seen[-1][0, c, y, xx], x)
    return (grad[0].abs().sum(0) > 0).numpy()


def _best_channel(model: nn.Module, layer: str, x: torch.Tensor, y: int, xx: int) -> int:
    """The channel most active at (y, xx) (last call of a reused module)."""
    return int(layer_output(model, layer, x)[0, :, y, xx].argmax())


def _assert_inside(support: np.ndarray, box: tuple[int, int, int, int]) -> None:
    assert support.any(), "unit has no support: test would be vacuous"
    rows, cols = np.nonzero(support)
    top, left, bottom, right = box
    assert rows.min() >= top and rows.max() < bottom and cols.min() >= left and cols.max() < right


def _plain_stack(pool: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        pool(2),
        nn.Conv2d(4, 4, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(4, 4, 3, dilation=2, padding=1), nn.ReLU(),
        pool(3, stride=2, padding=1),
        nn.Conv2d(4, 3, (3, 1)),
    ).eval()


def test_alexnet_sizes() -> None:
    model = torchvision.models.alexnet(weights=None)
    rf = receptive_fields(model, (128, 128))
    sizes = [rf[f"features.{i}"].size[0] for i in (0, 3, 6, 8, 10)]
    assert sizes == [11, 51, 99, 131, 163]
    assert rf["features.11"] == rf["features.10"]  # ReLU keeps the field
    assert rf["features.0"] == ReceptiveField(size=(11, 11), jump=(4, 4), first=(-2, -2))
    assert "classifier.1" not in rf  # not a feature map


def test_plain_stack_geometry_by_hand() -> None:
    rf = receptive_fields(_plain_stack(nn.MaxPool2d), (64, 64))
    # conv3 p1: 3, j1, f-1 | pool2: 4, j2, f-1 | conv5 s2 p2: 12, j4, f-5
    # conv3 d2 (k_eff 5) p1: 28, j4, f-9 | pool3 s2 p1: 36, j8, f-13 | conv (3,1): (52, 36)
    assert rf["3"] == ReceptiveField((12, 12), (4, 4), (-5, -5))
    assert rf["5"] == rf["6"] == ReceptiveField((28, 28), (4, 4), (-9, -9))
    assert rf["7"] == ReceptiveField((36, 36), (8, 8), (-13, -13))
    assert rf["8"] == ReceptiveField((52, 36), (8, 8), (-13, -13))
    assert rf["8"].box(2, 3) == (3, 11, 55, 47)


@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d])
def test_plain_stack_contains_gradient_support(pool: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = _plain_stack(pool)
    x = torch.rand(1, 3, 64, 64)
    rf = receptive_fields(model, (64, 64))
    with torch.no_grad():
        for m in model:  # positive weights: every unit has support
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
    for layer, units in {"4": [(0, 0, 0), (1, 7, 3), (2, 15, 15)],
                         "8": [(0, 0, 0), (1, 3, 4), (2, 4, 6)]}.items():
        for c, y, xx in units:
            _assert_inside(_support(model, layer, x, c, y, xx), rf[layer].box(y, xx))


def test_plain_stack_box_is_tight() -> None:
    """Positive weights and inputs, no zero ReLUs, average pooling: the support of an interior
    unit touches all four sides of its box, so the box is not larger than needed."""
    torch.manual_seed(0)
    model = _plain_stack(nn.AvgPool2d)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.1, 1.0)
                m.bias.uniform_(0.1, 1.0)
    x = torch.rand(1, 3, 96, 96) + 0.5
    rf = receptive_fields(model, (96, 96))
    for layer, (y, xx) in {"5": (6, 7), "8": (4, 5)}.items():
        box = rf[layer].box(y, xx)
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= 96 and box[3] <= 96  # interior
        rows, cols = np.nonzero(_support(model, layer, x, 0, y, xx))
        assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == box


def test_alexnet_contains_gradient_support() -> None:
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    x = torch.rand(1, 3, 128, 128)
    rf = receptive_fields(model, (128, 128))
    for layer, (y, xx) in {"features.4": (7, 2), "features.7": (3, 3),
                           "features.11": (0, 6)}.items():
        c = _best_channel(model, layer, x, y, xx)
        _assert_inside(_support(model, layer, x, c, y, xx), rf[layer].box(y, xx))


def test_resnet18_contains_gradient_support() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(1, 3, 96, 96)
    rf = receptive_fields(model, (96, 96))
    # layer2 (a container) ends with layer2.1.relu's second call; both get that geometry.
    assert rf["layer2"] == rf["layer2.1.relu"] == ReceptiveField((99, 99), (8, 8), (-49, -49))
    # A reused ReLU reports its last call (after the residual add), not its first.
    assert rf["layer1.0.relu"].size == (27, 27)
    for layer, (y, xx) in {"layer2": (5, 6), "layer2.1.relu": (0, 11)}.items():
        support = _support(model, layer, x, _best_channel(model, layer, x, y, xx), y, xx)
        _assert_inside(support, rf[layer].box(y, xx))


def test_convnext_channels_last_blocks_contain_gradient_support() -> None:
    """ConvNeXt blocks work channels-last between two permutes (LayerNorm, Linear, GELU per
    position): the geometry goes through them, and only channels-first outputs are layers."""
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    x = torch.rand(1, 3, 64, 64)
    rf = receptive_fields(model, (64, 64))
    # stem 4/4, then each block's 7 x 7 depthwise conv at jump 4: 4 + 6 * 4 = 28, 52, 76
    assert [rf[f"features.1.{i}"].size for i in range(3)] == [(28, 28), (52, 52), (76, 76)]
    assert "features.1.0.block.4" not in rf  # the GELU's output is channels-last
    for layer, (y, xx) in {"features.1.1": (6, 3), "features.3.0": (2, 5)}.items():
        support = _support(model, layer, x, _best_channel(model, layer, x, y, xx), y, xx)
        _assert_inside(support, rf[layer].box(y, xx))


class _Branches(nn.Module):
    """Two branches merged by add and by cat, plus functional pooling (as in Inception)."""

    def __init__(self) -> None:
        super().__init__()
        self.narrow = nn.Conv2d(3, 2, 1)
        self.wide = nn.Conv2d(3, 2, 5, padding=2)
        self.after_add = nn.Identity()
        self.after_cat = nn.ReLU()
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        added = self.after_add(self.narrow(x) + self.wide(x))
        catted = self.after_cat(
            torch.cat([self.narrow(x), F.avg_pool2d(x, 3, stride=1, padding=1)], dim=1))
        return self.out(F.max_pool2d(added, 2) + F.max_pool2d(catted[:, :2], 2))


def test_merges_take_union_and_functional_pools_count() -> None:
    rf = receptive_fields(_Branches(), (16, 16))
    assert rf["wide"] == ReceptiveField((5, 5), (1, 1), (-2, -2))
    assert rf["narrow"] == ReceptiveField((1, 1), (1, 1), (0, 0))
    assert rf["after_add"] == ReceptiveField((5, 5), (1, 1), (-2, -2))  # union 1x1 + 5x5
    assert rf["after_cat"] == ReceptiveField((3, 3), (1, 1), (-1, -1))  # F.avg_pool2d 3x3
    # max_pool2d(2) of each: (6, j2, f-2) and (4, j2, f-1) -> union (6, j2, f-2)
    assert rf["out"] == ReceptiveField((6, 6), (2, 2), (-2, -2))


class _Untraceable(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = x * 1.0
        return super().forward(x)


def test_hook_fallback_for_untraceable_models() -> None:
    model = _Untraceable(*_plain_stack(nn.MaxPool2d))
    assert receptive_fields(model, (64, 64)) == {
        k: v for k, v in receptive_fields(_plain_stack(nn.MaxPool2d), (64, 64)).items()}


# --- tiles ------------------------------------------------------------------------------------

IMAGE = np.arange(10 * 12, dtype=np.float32).reshape(10, 12, 1)


def test_clip_box_reports_cut_per_side() -> None:
    assert clip_box((-2, -3, 3, 2), (10, 12)) == ((0, 0, 3, 2), (2, 3, 0, 0))
    assert clip_box((7, 9, 12, 14), (10, 12)) == ((7, 9, 10, 12), (0, 0, 2, 2))
    assert clip_box((1, 1, 4, 4), (10, 12)) == ((1, 1, 4, 4), (0, 0, 0, 0))


def test_field_tile_inside() -> None:
    tile = field_tile(IMAGE, (2, 3, 7, 8), (5, 5), -1.0)
    np.testing.assert_array_equal(tile, IMAGE[2:7, 3:8])


def test_field_tile_pads_clipped_top_left() -> None:
    tile = field_tile(IMAGE, (-2, -3, 3, 2), (5, 5), -1.0)
    assert tile.shape == (5, 5, 1)
    assert (tile[:2] == -1).all() and (tile[:, :3] == -1).all()
    np.testing.assert_array_equal(tile[2:, 3:], IMAGE[0:3, 0:2])


def test_field_tile_pads_clipped_bottom_right() -> None:
    tile = field_tile(IMAGE, (7, 9, 12, 14), (5, 5), -1.0)
    assert (tile[3:] == -1).all() and (tile[:, 3:] == -1).all()
    np.testing.assert_array_equal(tile[:3, :3], IMAGE[7:10, 9:12])


def test_field_tile_box_larger_than_image_is_whole_image() -> None:
    rf = ReceptiveField(size=(15, 8), jump=(4, 4), first=(-6, -2))
    tile_hw = rf.tile_hw((10, 12))
    assert tile_hw == (10, 8)
    tile = field_tile(IMAGE, rf.box(0, 0), tile_hw, -1.0)  # rows: whole image; cols: pad left 2
    assert tile.shape == (10, 8, 1)
    assert (tile[:, :2] == -1).all()
    np.testing.assert_array_equal(tile[:, 2:], IMAGE[:, 0:6])
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    assert (field_tile(rgb, rf.box(0, 0), tile_hw, (1, 2, 3))[0, 0] == [1, 2, 3]).all()
    with pytest.raises(ValueError, match="tile_hw"):
        field_tile(IMAGE, (0, 0, 5, 5), (4, 4), 0.0)


def test_projection_and_image_tiles_align() -> None:
    """The projection's support lands inside the tile where the image pixels it came from do."""
    torch.manual_seed(0)
    model = _plain_stack(nn.MaxPool2d)
    with torch.no_grad():
        for m in model:  # positive weights: every unit has support
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
    rf = receptive_fields(model, (64, 64))["4"]
    x = torch.rand(1, 3, 64, 64)
    for y, xx in [(0, 0), (15, 15), (0, 9)]:
        support = _support(model, "4", x, 1, y, xx)[..., None].astype(np.float32)
        coords = np.stack(np.meshgrid(np.arange(64), np.arange(64), indexing="ij"), -1)
        proj_tile = field_tile(support, rf.box(y, xx), rf.tile_hw((64, 64)), 0.0)
        coord_tile = field_tile(coords, rf.box(y, xx), rf.tile_hw((64, 64)), -1)
        assert proj_tile.sum() == support.sum() > 0  # nothing of the projection is cut off
        r, c = coord_tile[proj_tile[..., 0] > 0].T  # image coordinates under the support
        assert support[r, c, 0].all()


# --- default layers ---------------------------------------------------------------------------


def test_default_layers_alexnet_and_resnet() -> None:
    alex = analysable_layers(torchvision.models.alexnet(weights=None), (128, 128))
    assert [(i.label, i.name, i.channels) for i in alex] == [
        ("conv1", "features.1", 64), ("conv2", "features.4", 192), ("conv3", "features.7", 384),
        ("conv4", "features.9", 256), ("conv5", "features.11", 256)]
    assert alex[1].out_shape == (192, 15, 15) and alex[4].receptive_field.size == (163, 163)
    res = analysable_layers(torchvision.models.resnet18(weights=None), (64, 64))
    assert [i.name for i in res] == ["relu"] + [f"layer{a}.{b}.relu" for a in range(1, 5)
                                                for b in range(2)]
    assert res[-1].label == "conv9" and res[-1].out_shape == (512, 2, 2)


def test_explicit_layers_and_unknown_names() -> None:
    model = torchvision.models.resnet18(weights=None)
    infos = analysable_layers(model, (64, 64), names=["layer2", "maxpool"])
    assert [(i.name, i.label, i.out_shape) for i in infos] == [
        ("layer2", "layer2", (128, 8, 8)), ("maxpool", "maxpool", (64, 16, 16))]
    with pytest.raises(UserError, match=r"'layer9'.*'fc'.*conv1.*in all"):
        analysable_layers(model, (64, 64), names=["layer9", "fc"])
    assert all(m.training for m in model.modules())  # dummy pass restored the flags


def test_a_model_in_train_mode_is_traced_as_in_eval_mode() -> None:
    """Inception v3 runs its auxiliary classifier only while training: fields, and the calls
    the projector counts, are those of the eval-mode forward whatever mode the model is in."""
    model = torchvision.models.inception_v3(weights=None, init_weights=False)
    eval_fields = receptive_fields(model.eval(), (160, 160))
    train_fields = receptive_fields(model.train(), (160, 160))
    assert model.training and train_fields == eval_fields
    assert train_fields["Mixed_7c"].jump == (32, 32)


def test_shufflenet_channel_shuffle_keeps_the_geometry() -> None:
    """ShuffleNet splits each block's input into two branches (chunk) and shuffles channels
    through a 5-D view (view, transpose, view back): none of it moves a pixel."""
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x1_0(weights=None).eval()
    x = torch.rand(1, 3, 96, 96)
    rf = receptive_fields(model, (96, 96))
    assert "stage4.3.branch2.7" in rf and len(analysable_layers(model, (96, 96))) == 37
    for layer, (y, xx) in {"stage2.1.branch2.7": (5, 4), "stage3.2": (2, 3)}.items():
        support = _support(model, layer, x, _best_channel(model, layer, x, y, xx), y, xx)
        _assert_inside(support, rf[layer].box(y, xx))
