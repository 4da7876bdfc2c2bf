"""Shuffling that a resumed training run can reproduce."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """A shuffle seeded by (seed, epoch), so a run resumed at epoch e sees the same order as an
    uninterrupted one from epoch e on."""

    def __init__(self, size: int, seed: int, first_epoch: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, first_epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.size, generator=generator).tolist())
