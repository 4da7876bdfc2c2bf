"""Small model pieces the tests of the rules share."""

from __future__ import annotations

import torch
from torch import nn


class Called(nn.Module):
    """A function as a module: the module whose forward contains it (what refusals name)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)
