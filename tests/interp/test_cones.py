"""Projection on cones equals the full-image projection, on real torchvision architectures with
random weights (a plain stack, residual merges with batch norm, concatenated branches with
ceil-mode pooling, local response normalisation), for every method, at the centre, edges and
corners of the map; and a model whose path to the layer is not local has no cones."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models

from pipeline.interp import Projector
from pipeline.interp.cones import cone_graph

METHODS = ("deconvnet", "guided", "gradient")


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "googlenet":
        return models.googlenet(num_classes=10, aux_logits=False, init_weights=True).eval()
    if name == "lrn":
        return nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(inplace=True),
                             nn.LocalResponseNorm(3), nn.MaxPool2d(3, 2, ceil_mode=True),
                             nn.Conv2d(8, 12, 3, padding=1), nn.ReLU()).eval()
    return getattr(models, name)(num_classes=10).eval()


def requests(model: nn.Module, layer: str, side: int) -> tuple[torch.Tensor, ...]:
    """Two images, each with its strongest unit at the centre, the four corners and an edge."""
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, a, out: captured.update(out=out.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    fmap = captured["out"]
    h, w = fmap.shape[2:]
    spots = [(h // 2, w // 2), (0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, 0)]
    index, units, positions = [], [], []
    for i in range(2):
        for y, x in spots:
            index.append(i)
            units.append(int(fmap[i, :, y, x].abs().argmax()))
            positions.append((y, x))
    return images[index], torch.tensor(units), torch.tensor(positions)


@pytest.mark.parametrize(("name", "layer", "side"), [
    ("alexnet", "features.11", 96),
    pytest.param("resnet18", "layer3.1", 64, marks=pytest.mark.slow),
    pytest.param("googlenet", "inception4a", 64, marks=pytest.mark.slow),
    ("lrn", "5", 40),
])
@pytest.mark.parametrize("method", METHODS)
def test_cone_projection_equals_the_full_image_projection(name, layer, side, method):
    model = build(name)
    images, units, positions = requests(model, layer, side)
    full = Projector(model, method, windowed=False).project(images, layer, units, positions)
    projector = Projector(model, method, batch_size=5)
    coned = projector.project(images, layer, units, positions)

    assert projector._cone_checked[(layer, side, side)] is not None  # the cones ran
    scale = full.flatten(1).abs().max(dim=1).values.clamp_min(1e-30)[:, None, None, None]
    assert float(((coned - full) / scale).abs().max()) <= 1e-5
    assert bool((full.flatten(1).abs().amax(dim=1) > 0).any())  # not vacuous


def test_a_cone_is_no_larger_than_the_field_and_one_unit_wide_at_its_layer():
    cones = cone_graph(build("alexnet"), "features.11", (224, 224))
    assert cones is not None
    needs = cones.needs([(6, 6), (0, 12)])
    assert needs[cones.target] == [(6, 7, 6, 7), (0, 1, 12, 13)]
    placeholder = next(n for n in cones.nodes if n.op == "placeholder")
    top, bottom, left, right = needs[placeholder][0]
    assert (bottom - top, right - left) == (163, 163)  # conv5's receptive field
    assert needs[placeholder][1] == (0, 97, 126, 224)  # clipped at the corner


class Gated(nn.Module):
    """Squeeze-and-excitation: the gate reads the whole map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Linear(4, 4)
        self.out = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        x = x * torch.sigmoid(self.gate(x.mean(dim=(2, 3))))[:, :, None, None]
        return self.out(x)


def test_a_path_that_reads_the_whole_map_has_no_cones_and_projects_as_before():
    torch.manual_seed(0)
    model = Gated().eval()
    assert cone_graph(model, "out", (16, 16)) is None
    x = torch.randn(2, 3, 16, 16)
    args = ("out", torch.tensor([0, 1]), torch.tensor([[3, 4], [8, 8]]))
    projector = Projector(model, "gradient")
    got = projector.project(x, *args)
    assert projector._cone_checked[("out", 16, 16)] is None
    torch.testing.assert_close(got, Projector(model, "gradient", windowed=False).project(x, *args))


@pytest.mark.parametrize("method", [  # the mapping does not depend on the rule: one is fast
    "deconvnet", *(pytest.param(m, marks=pytest.mark.slow) for m in METHODS[1:])])
def test_requests_that_share_their_images_project_as_with_a_copy_each(method):
    model = build("alexnet")
    copies, units, positions = requests(model, "features.11", 96)  # 6 requests per image
    image_of = torch.tensor([0] * 6 + [1] * 6)
    images = copies[[0, 6]]
    assert torch.equal(images[image_of], copies)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(2))  # mixed, 5 a batch
    each = Projector(model, method, batch_size=5).project(copies[order], "features.11",
                                                          units[order], positions[order])
    projector = Projector(model, method, batch_size=5)
    shared = projector.project(images, "features.11", units[order], positions[order],
                               image_of[order])
    assert projector._cone_checked[("features.11", 96, 96)] is not None  # the cones ran
    assert torch.equal(shared, each)  # the same crops, bit for bit
    assert bool((each.flatten(1).abs().amax(dim=1) > 0).all())


def test_shared_images_on_a_model_without_cones_project_as_with_a_copy_each():
    torch.manual_seed(0)
    model = Gated().eval()
    images = torch.randn(2, 3, 16, 16)
    image_of = torch.tensor([1, 0, 1])
    args = ("out", torch.tensor([0, 1, 3]), torch.tensor([[3, 4], [8, 8], [0, 15]]))
    got = Projector(model, "gradient").project(images, *args, image_of)
    torch.testing.assert_close(got, Projector(model, "gradient").project(images[image_of], *args))
    for bad in (torch.tensor([0, 2, 1]), torch.tensor([True, False, True]),
                torch.tensor([0.0, 1.0, 0.0]), torch.tensor([[0, 1, 0]]), torch.tensor(0)):
        with pytest.raises(ValueError, match="image_of"):
            Projector(model, "gradient").project(images, *args, bad)
