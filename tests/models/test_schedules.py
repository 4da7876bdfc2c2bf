"""The 'plateau' schedule: the paper's lr / 10 when the validation accuracy stops improving,
and a resumed run that divides at the same epochs as an uninterrupted one."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.models import get_model
from pipeline.models.schedules import PlateauSchedule, make_schedule
from pipeline.models.training import train_classifier

ACCURACIES = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.65, 0.7]


def _rates(schedule: PlateauSchedule, accuracies: list[float]) -> list[float]:
    """The rate of the epoch after each accuracy."""
    rates = []
    for accuracy in accuracies:
        schedule.epoch_end(accuracy)
        rates.append(schedule.rate(0))
    return rates


def test_plateau_divides_by_ten_after_patience_epochs_without_a_better_accuracy() -> None:
    schedule = make_schedule("plateau", 0.01, total_steps=800, patience=2)
    assert schedule.rate(0) == schedule.rate(799) == 0.01  # no warm-up, constant
    rates = _rates(schedule, ACCURACIES)
    assert rates == pytest.approx([0.01, 0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4], rel=1e-12)


def test_an_improvement_within_the_tolerance_is_no_improvement() -> None:
    schedule = PlateauSchedule(0.01, patience=1)
    assert _rates(schedule, [0.5, 0.5 + 1e-9, 0.5 + 1e-3]) == pytest.approx([0.01, 1e-3, 1e-3])


def test_a_schedule_loaded_from_its_state_continues_identically() -> None:
    full = PlateauSchedule(0.01, patience=2)
    expected = _rates(full, ACCURACIES)
    first = PlateauSchedule(0.01, patience=2)
    _rates(first, ACCURACIES[:3])  # mid-plateau: one epoch since the best
    resumed = PlateauSchedule(0.5, patience=2)  # other numbers until the state is loaded
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    assert _rates(resumed, ACCURACIES[3:]) == expected[3:]
    assert resumed.state_dict() == full.state_dict()


def _loaders() -> tuple[list, list]:
    """A learnable training set and a validation set on which accuracy soon stops improving."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 32, 32, generator=gen)
    labels = torch.arange(32) % 2
    images[labels == 1, 0] += 1.0
    dataset = torch.utils.data.TensorDataset(images, labels, torch.arange(32))
    val_labels = torch.randint(0, 2, (32,), generator=gen)  # unrelated to the images
    val = torch.utils.data.TensorDataset(images, val_labels, torch.arange(32))
    return (torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True),
            torch.utils.data.DataLoader(val, batch_size=32))


def _train(model, epochs: int, on_epoch_end=None, **resume) -> dict:
    torch.manual_seed(5)
    train, val = _loaders()
    return train_classifier(model, train, val, epochs=epochs, lr=0.01, weight_decay=0.0,
                            device=torch.device("cpu"), optimizer="sgd", filter_radius=0.1,
                            schedule="plateau", plateau_patience=2, on_epoch_end=on_epoch_end,
                            **resume)


def test_training_resumed_mid_plateau_follows_the_uninterrupted_rates() -> None:
    checkpoints: dict = {}

    def save(epoch: int, metrics: dict) -> None:  # what the train stage's checkpoint keeps
        checkpoints[epoch] = copy.deepcopy((model.state_dict(), metrics))

    torch.manual_seed(0)
    model = get_model("zfnet_small", num_classes=2, image_size=32)
    final = _train(model, 5, on_epoch_end=save)
    weights, metrics = checkpoints[2]
    # resumed mid-plateau (a fresh schedule would take epoch 3 for an improvement), and
    # divided after it
    assert metrics["schedule_state"]["epochs_since_best"] == 1
    assert metrics["lr"] == 0.01 and final["lr"] < 0.01
    torch.manual_seed(99)
    resumed = get_model("zfnet_small", num_classes=2, image_size=32)
    resumed.load_state_dict(weights)
    again = _train(resumed, 5, start_epoch=2, optimizer_state=metrics["optimizer_state"],
                   schedule_state=metrics["schedule_state"])
    assert again["lr"] == final["lr"] and again["schedule_state"] == final["schedule_state"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
