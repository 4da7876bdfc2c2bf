"""ZFNet builders: shapes, layer names the atlas relies on, and the registry's errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models import get_model, list_models, register_model

FEATURE_NAMES = ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
                 "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5"]


def test_zfnet_small_shapes_and_names() -> None:
    model = get_model("zfnet_small", num_classes=10).eval()
    assert [n for n, _ in model.features.named_children()] == FEATURE_NAMES
    assert [n for n, _ in model.classifier.named_children()] == [
        "drop6", "fc6", "relu6", "drop7", "fc7"]
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    with torch.no_grad():
        assert model(torch.zeros(3, 3, 64, 64)).shape == (3, 10)
        assert model.features(torch.zeros(1, 3, 64, 64)).shape == (1, 32, 4, 4)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert sum(c.out_channels for c in convs) <= 250


@pytest.mark.parametrize("size", [32, 96])
def test_zfnet_small_other_image_sizes(size: int) -> None:
    model = get_model("zfnet_small", num_classes=4, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 4)


def test_zfnet_paper_geometry() -> None:
    model = get_model("zfnet", num_classes=7).eval()
    assert [n for n, _ in model.features.named_children()] == FEATURE_NAMES
    assert model.classifier.fc6.out_features == model.classifier.fc7.out_features == 4096
    sizes = {}
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for name, layer in model.features.named_children():
            x = layer(x)
            sizes[name] = tuple(x.shape[1:])
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 7)
    assert sizes["conv1"] == (96, 110, 110)
    assert sizes["pool1"] == (96, 55, 55)
    assert sizes["conv2"] == (256, 26, 26)
    assert sizes["conv5"] == (256, 13, 13)
    assert sizes["pool5"] == (256, 6, 6)


def test_registry_refuses_duplicates() -> None:
    assert {"zfnet", "zfnet_small"} <= set(list_models())
    with pytest.raises(ValueError, match="zfnet_small"):
        register_model("zfnet_small")(lambda **kw: nn.Identity())


def test_unknown_model_lists_names_and_suggests() -> None:
    with pytest.raises(UserError) as info:
        get_model("zfnet_smal", num_classes=3)
    message = str(info.value)
    assert "'zfnet_small'" in message and "zfnet, zfnet_small" in message
    assert "\n" not in message


# Training lives next to the models; its resume contract is checked here on a tiny problem.

def _tiny_loaders() -> tuple[list, list]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(48, 3, 32, 32, generator=gen)
    labels = torch.arange(48) % 3
    images[labels == 1, 0] += 1.5  # learnable: class 1 is redder, class 2 greener
    images[labels == 2, 1] += 1.5
    dataset = torch.utils.data.TensorDataset(images, labels, torch.arange(48))
    train = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
    val = torch.utils.data.DataLoader(dataset, batch_size=48)
    return train, val


def _train(epochs: int, start_epoch: int = 0, model: nn.Module | None = None,
           optimizer_state: dict | None = None, on_epoch_end=None) -> tuple[nn.Module, dict]:
    from pipeline.models.training import train_classifier

    torch.manual_seed(11)
    model = model or get_model("zfnet_small", num_classes=3, image_size=32)
    train, val = _tiny_loaders()
    metrics = train_classifier(
        model, train, val, epochs=epochs, lr=1e-3, weight_decay=1e-4,
        device=torch.device("cpu"), start_epoch=start_epoch, optimizer_state=optimizer_state,
        on_epoch_end=on_epoch_end)
    return model, metrics


def test_training_learns_and_resume_matches_uninterrupted_run() -> None:
    import copy

    seen: list = []
    checkpoints: dict = {}

    def save(epoch: int, metrics: dict) -> None:  # what the train stage's checkpoint does
        seen.append((epoch, set(metrics)))
        checkpoints[epoch] = copy.deepcopy((full.state_dict(), metrics["optimizer_state"]))

    # a fixed initialisation: the weights must not depend on which tests ran before
    torch.manual_seed(0)
    full = get_model("zfnet_small", num_classes=3, image_size=32)
    full, full_metrics = _train(4, model=full, on_epoch_end=save)
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert {"epoch", "train_loss", "val_accuracy", "optimizer_state"} <= seen[0][1]
    assert full_metrics["val_accuracy"] >= 0.9

    torch.manual_seed(123)  # a fresh process: other weights, other RNG state
    resumed = get_model("zfnet_small", num_classes=3, image_size=32)
    weights, optimizer_state = checkpoints[2]
    resumed.load_state_dict(weights)
    resumed, resumed_metrics = _train(4, start_epoch=2, model=resumed,
                                      optimizer_state=optimizer_state)
    assert resumed_metrics["epoch"] == 4
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resume_after_the_last_epoch_reports_that_epochs_metrics() -> None:
    """A run stopped between its last checkpoint and its outputs trains nothing more and
    reports what the uninterrupted run did, from the checkpoint."""
    import copy

    from pipeline.models.training import train_classifier

    last = {"epoch": 2, "train_loss": 0.5, "lr": 1e-4, "val_accuracy": 0.75}
    model = get_model("zfnet_small", num_classes=3, image_size=32)
    weights = copy.deepcopy(model.state_dict())
    train, val = _tiny_loaders()
    metrics = train_classifier(model, train, val, epochs=2, lr=1e-3, weight_decay=1e-4,
                               device=torch.device("cpu"), start_epoch=2, resumed_metrics=last)
    states = ("optimizer_state", "schedule_state")
    assert {key: value for key, value in metrics.items() if key not in states} == last
    assert set(states) <= set(metrics)
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_learning_rate_schedule_is_a_function_of_the_step() -> None:
    from pipeline.models.schedules import learning_rate

    rates = [learning_rate(s, 100, 1e-3) for s in range(100)]
    assert rates[0] < rates[4] == pytest.approx(1e-3)  # warm-up over 5 % of the steps
    assert all(a >= b for a, b in zip(rates[4:], rates[5:], strict=False))
    assert rates[-1] < 1e-5


def test_filter_renormalisation_caps_only_filters_beyond_the_radius() -> None:
    from pipeline.models.training import renormalise_filters

    conv = nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        conv.weight[0].fill_(0.5)  # RMS 0.5: scaled back to the radius
        conv.weight[1].fill_(0.01)  # inside the radius: untouched
    renormalise_filters(nn.Sequential(conv), radius=0.1)
    rms = conv.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert rms[0].item() == pytest.approx(0.1) and rms[1].item() == pytest.approx(0.01)


@pytest.mark.slow
def test_sgd_with_filter_radius_learns_and_keeps_filters_inside_it() -> None:
    from pipeline.models.training import scale_first_conv, train_classifier

    torch.manual_seed(11)
    model = get_model("zfnet_small", num_classes=3, image_size=32)
    scale_first_conv(model, 0.02)
    train, val = _tiny_loaders()
    metrics = train_classifier(model, train, val, epochs=10, lr=2e-2, weight_decay=5e-3,
                               device=torch.device("cpu"), optimizer="sgd", filter_radius=0.1)
    assert metrics["val_accuracy"] >= 0.9
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            rms = module.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt()
            assert rms.max().item() <= 0.1 + 1e-6
