"""Learning-rate schedules of the train stage, each exactly resumable at an epoch boundary.

'cosine' (the default) is a pure function of the global step: linear warm-up, then cosine decay
to zero; a resumed run needs nothing but the step. 'plateau' is Zeiler & Fergus's (2013, sec. 3):
a constant learning rate, divided by 10 whenever the validation accuracy has stopped improving,
with no warm-up. It depends on the accuracies seen so far, so its state (the current rate, the
best accuracy, the epochs since it) is saved in every epoch checkpoint; a run resumed from one
then divides at the same epochs as an uninterrupted run.
"""

from __future__ import annotations

import math
from typing import Protocol

WARMUP_FRACTION = 0.05  # of all steps; avoids early divergence at the peak learning rate
PLATEAU_FACTOR = 10.0  # the paper divides the rate by 10
# An accuracy counts as better only above the best by more than this: a fraction of one image in
# a million, so any real improvement counts, while float noise in a mean does not.
PLATEAU_TOLERANCE = 1e-6


def learning_rate(step: int, total_steps: int, peak: float) -> float:
    """Learning rate at global ``step`` of ``total_steps``: linear warm-up, cosine decay."""
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total_steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


class Schedule(Protocol):
    """What training asks of a schedule: the rate of each step, told each epoch's accuracy."""

    def rate(self, step: int) -> float:
        """The learning rate of global ``step`` (0-based over the whole run)."""

    def epoch_end(self, val_accuracy: float) -> None:
        """Take in the validation accuracy after an epoch."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps so that a resumed run follows the same rates."""

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()`` of a checkpoint."""


class CosineSchedule:
    """Warm-up over 5 % of the steps to ``peak``, then cosine decay to 0 (:func:`learning_rate`)."""

    def __init__(self, peak: float, total_steps: int) -> None:
        self.peak, self.total_steps = peak, total_steps

    def rate(self, step: int) -> float:
        return learning_rate(step, self.total_steps, self.peak)

    def epoch_end(self, val_accuracy: float) -> None:
        pass  # a function of the step alone

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PlateauSchedule:
    """A constant rate, divided by 10 after ``patience`` epochs without a better accuracy.

    The count of epochs since the best restarts after each division, so the new rate gets
    ``patience`` epochs of its own before the next one; the best accuracy is kept. There is no
    floor: a run that never improves again ends with a very small rate, as the recipe would.
    """

    def __init__(self, lr: float, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.lr, self.patience = lr, patience
        self.best = -math.inf
        self.epochs_since_best = 0

    def rate(self, step: int) -> float:
        return self.lr

    def epoch_end(self, val_accuracy: float) -> None:
        if val_accuracy > self.best + PLATEAU_TOLERANCE:
            self.best, self.epochs_since_best = val_accuracy, 0
            return
        self.epochs_since_best += 1
        if self.epochs_since_best >= self.patience:
            self.lr /= PLATEAU_FACTOR
            self.epochs_since_best = 0

    def state_dict(self) -> dict:
        return {"lr": self.lr, "best": self.best, "epochs_since_best": self.epochs_since_best}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.epochs_since_best = int(state["epochs_since_best"])


def make_schedule(name: str, lr: float, total_steps: int, patience: int = 2) -> Schedule:
    """The schedule ``name`` ('cosine' or 'plateau') starting from (or peaking at) ``lr``."""
    if name == "cosine":
        return CosineSchedule(lr, total_steps)
    if name == "plateau":
        return PlateauSchedule(lr, patience)
    raise ValueError(f"unknown schedule {name!r}; use 'cosine' or 'plateau'")
