"""Zeiler & Fergus's recipe on the paper's ZFNet: its geometry at 224 px, its init, its random
crops and flips, and its filter radius held after every step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.config import load_workflow
from pipeline.interp import analysable_layers
from pipeline.models import get_model
from pipeline.models.preprocessing import Preprocessing
from pipeline.models.training import init_weights, make_optimizer, train_step

# (module, width, channels) at 224 px: the paper's fig. 3.
PAPER_MAPS = [("conv1", 110, 96), ("pool1", 55, 96), ("conv2", 26, 256), ("pool2", 13, 256),
              ("conv3", 13, 384), ("conv4", 13, 384), ("conv5", 13, 256), ("pool5", 6, 256)]
RECIPE = """
[data]
source = "synthetic"
[model]
name = "zfnet"
image_size = 224
resize_size = 256
[train]
enabled = true
recipe = "zf2013"
"""


def _filter_rms(model: nn.Module) -> list[torch.Tensor]:
    return [module.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt()
            for module in model.modules() if isinstance(module, nn.Conv2d)]


def test_zfnet_feature_maps_at_224_are_the_papers() -> None:
    model = get_model("zfnet", num_classes=5).eval()
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [getattr(model.features, name).register_forward_hook(
        lambda module, inputs, output, name=name: shapes.__setitem__(name, output.shape))
        for name, _, _ in PAPER_MAPS]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 224, 224))
    finally:
        for handle in handles:
            handle.remove()
    assert {name: (shape[1], shape[2], shape[3]) for name, shape in shapes.items()} == {
        name: (channels, width, width) for name, width, channels in PAPER_MAPS}
    layers = analysable_layers(model, (224, 224))
    assert [(layer.label, layer.name) for layer in layers] == [
        (f"conv{i}", f"features.relu{i}") for i in range(1, 6)]  # rectified maps
    convs = [entry for entry in PAPER_MAPS if entry[0].startswith("conv")]
    assert [layer.out_shape for layer in layers] == [(c, w, w) for _, w, c in convs]


@pytest.mark.slow
def test_the_recipe_draws_weights_from_n_0_001_and_zeroes_biases(write_workflow) -> None:
    train = load_workflow(write_workflow(RECIPE)).train
    assert train.init_std == 0.01
    torch.manual_seed(0)
    model = get_model("zfnet", num_classes=5)
    init_weights(model, train.init_std)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == 8
    for layer in layers:
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.02)
        assert layer.weight.mean().abs().item() < 1e-3
        assert torch.count_nonzero(layer.bias) == 0
    torch.manual_seed(0)
    again = get_model("zfnet", num_classes=5)
    init_weights(again, train.init_std)
    assert torch.equal(again.features.conv1.weight, model.features.conv1.weight)


@pytest.mark.slow
def test_every_recipe_step_leaves_each_conv_filter_within_rms_0_1(write_workflow) -> None:
    """Four steps of the recipe (SGD, lr 0.01, momentum 0.9, dropout) on eight augmented images:
    one filter per layer is set far beyond the radius first, so the cap must act on step one,
    and no filter may be beyond it after any step."""
    workflow = load_workflow(write_workflow(RECIPE))
    train = workflow.train
    assert (train.optimizer, train.lr, train.momentum, train.filter_radius) == (
        "sgd", 0.01, 0.9, 0.1)
    torch.manual_seed(0)
    model = get_model("zfnet", num_classes=2)
    init_weights(model, train.init_std)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            conv.weight[0].mul_(40.0)  # RMS ~0.4
    assert all(rms[0] > 0.3 for rms in _filter_rms(model))
    transform = Preprocessing(input_size=224, resize=224, mean=workflow.model.mean,
                              std=workflow.model.std).training_transform(resize=256)
    images = torch.stack([transform(image) for image in _smooth_images(8, (300, 260))])
    labels = torch.arange(8) % 2
    optim = make_optimizer(model, train.optimizer, train.lr, train.weight_decay, train.momentum)
    model.train()
    for step in range(4):
        batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
        loss = train_step(model, optim, images[batch], labels[batch], train.lr,
                          train.filter_radius)
        assert np.isfinite(loss)
        rms = _filter_rms(model)
        assert max(r.max().item() for r in rms) <= 0.1 + 1e-6, step
        assert all(r[0].item() == pytest.approx(0.1, rel=1e-4) for r in rms), step


def test_training_crops_are_random_squares_of_the_centre_flipped_at_random() -> None:
    """A 512 x 256 image whose outer quarters are red: resized to 256 and centre-cropped to
    256, so no 224 crop ever shows red; the crops move and flip, reproducibly by seed."""
    pixels = np.zeros((256, 512, 3), np.uint8)
    pixels[:, :128] = pixels[:, 384:] = (255, 0, 0)
    pixels[:, 128:384, 1] = np.linspace(0, 255, 256).astype(np.uint8)  # a left-right ramp
    image = Image.fromarray(pixels)
    prep = Preprocessing(input_size=224, resize=224, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    transform = prep.training_transform()  # 0: 224 * 256 / 224 = 256
    crops = []
    for seed in range(12):
        torch.manual_seed(seed)
        crops.append(transform(image))
    assert all(crop.shape == (3, 224, 224) for crop in crops)
    assert all(crop[0].max().item() < 0.05 for crop in crops)  # never the red margins
    ramps = [crop[1, 112] for crop in crops]
    rising = [bool(ramp[-1] > ramp[0]) for ramp in ramps]
    assert any(rising) and not all(rising)  # flipped sometimes, not always
    assert len({round(ramp.max().item(), 4) for ramp in ramps}) > 1  # the window moves
    torch.manual_seed(3)
    assert torch.equal(transform(image), crops[3])
    centres = []
    for seed in range(3):  # the analysed images' transform: never random
        torch.manual_seed(seed)
        centres.append(prep.transform()(image))
    assert all(torch.equal(centre, centres[0]) for centre in centres)


def test_recipe_fills_only_the_options_the_file_does_not_set(write_workflow) -> None:
    train = load_workflow(write_workflow(RECIPE + "lr = 0.05\nschedule = 'cosine'\n")).train
    assert (train.lr, train.schedule) == (0.05, "cosine")
    assert (train.optimizer, train.momentum, train.batch_size, train.init_std, train.augment,
            train.filter_radius) == ("sgd", 0.9, 128, 0.01, True, 0.1)
    custom = load_workflow(write_workflow(RECIPE.replace('"zf2013"', '"custom"'))).train
    assert (custom.optimizer, custom.lr, custom.schedule, custom.init_std, custom.augment) == (
        "adamw", 1e-3, "cosine", 0.0, False)


def _smooth_images(count: int, size: tuple[int, int]) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(
        size, Image.BILINEAR) for _ in range(count)]
