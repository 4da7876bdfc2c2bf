"""Small model pieces the tests share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.interp.projection_store import LayerPlan
from pipeline.interp.receptive_field import ReceptiveField


class Called(nn.Module):
    """A function as a module: the module whose forward contains it (what refusals name)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class Reused(nn.Module):
    """``act`` runs twice per pass: its second call (after conv2) is the one recorded. With
    ``inplace``, in place: conv1's output changes after conv1's hook saw it."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class Decoded:
    """The part of :class:`pipeline.data.decoded.DecodedImages` the deconv stage's pass over
    its top images reads: ``pixels`` ``uint8 [image, C, H, W]``, some of them ``unreadable``
    (read as black)."""

    channels = 3

    def __init__(self, pixels: np.ndarray, unreadable: set[int] | None = None) -> None:
        self.pixels, self.unreadable = pixels, unreadable or set()

    def read(self, image_ids: np.ndarray) -> np.ndarray:
        return np.stack([self.pixels[i] * (int(i) not in self.unreadable) for i in image_ids])

    def readable(self, image_ids: np.ndarray) -> np.ndarray:
        return np.array([int(i) not in self.unreadable for i in image_ids], dtype=bool)


def top_image_pass(inplace: bool = False, unreadable: set[int] | None = None
                   ) -> tuple[Reused, Decoded, list[LayerPlan], pd.DataFrame]:
    """A :class:`Reused` model, six decoded 16-px images, its two layers (conv1's and the second
    call of ``act``) and a rank table of top images on them, for the deconv stage's pass over
    its top images."""
    torch.manual_seed(0)
    model = Reused(inplace).eval()
    pixels = np.random.default_rng(1).integers(0, 256, (6, 3, 16, 16), dtype=np.uint8)
    field = ReceptiveField(size=(3, 3), jump=(1, 1), first=(-1, -1))  # unused by the pass
    layers = [LayerPlan("conv1", "conv1", 4, (16, 16), field),
              LayerPlan("conv2", "act", 5, (8, 8), field)]
    topk = pd.DataFrame({"layer": ["conv1"] * 4 + ["conv2"] * 3,
                         "unit": [0, 0, 3, 2, 4, 1, 1],
                         "rank": [0, 1, 0, 0, 0, 0, 1],
                         "image_id": [5, 2, 2, 4, 0, 5, 3]})
    return model, Decoded(pixels, unreadable), layers, topk
