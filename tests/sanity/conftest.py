"""Fixtures of the sanity tests: one torch thread, and a tiny two-conv network with its top
activations found by hand (real modules, fixed seeds)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.interp.projection_store import LayerPlan
from pipeline.interp.receptive_field import receptive_fields
from pipeline.sanity.sanity_run import Pictures

SIZE = 24  # side of the test images


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread (see tests/interp/conftest.py): small convolutions on a busy
    2-core machine; results are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_net(seed: int = 0, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """conv1 (5x5, 8 units) -> relu1 -> pool1 -> conv2 (3x3, 6 units) -> relu2 -> fc."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2), activation(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1), activation(), nn.Flatten(),
        nn.Linear(6 * (SIZE // 2) ** 2, 4)).eval()


LAYERS = (("conv1", "1"), ("conv2", "4"))  # (label, module): the ReLU outputs


def pixels(n: int = 6, seed: int = 0) -> torch.Tensor:
    """``n`` smooth random uint8 images ``[n, 3, SIZE, SIZE]``."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, 6, 6), generator=generator).float()
    big = nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear")
    return big.round().clamp(0, 255).to(torch.uint8)


def pictures(images: torch.Tensor) -> Pictures:
    return Pictures(lambda i: images[i], lambda x: x.float() / 127.5 - 1.0, SIZE)


def plans(model: nn.Module, layers=LAYERS) -> list[LayerPlan]:
    fields = receptive_fields(model, (SIZE, SIZE))
    found = []
    probe = torch.zeros(1, 3, SIZE, SIZE)
    for label, module in layers:
        shape = _output(model, module, probe).shape
        found.append(LayerPlan(label, module, shape[1], tuple(shape[2:]), fields[module]))
    return found


def _output(model: nn.Module, module: str, x: torch.Tensor) -> torch.Tensor:
    captured = []
    handle = model.get_submodule(module).register_forward_hook(
        lambda _m, _a, out: captured.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return captured[-1]


def top_table(model: nn.Module, images: torch.Tensor, k: int = 3, layers=LAYERS
              ) -> pd.DataFrame:
    """rank's table for ``images``: per layer and unit its top ``k`` images by maximum
    activation, where it is (y, x); units that never fire get no rows."""
    x = pictures(images).normalise(images)
    rows = []
    for label, module in layers:
        maps = _output(model, module, x)
        b, c, h, w = maps.shape
        peaks, where = maps.reshape(b, c, -1).max(dim=2)
        for unit in range(c):
            order = np.argsort(-peaks[:, unit].numpy(), kind="stable")[:k]
            for rank, image in enumerate(order):
                value = float(peaks[image, unit])
                if value > 0:
                    y, xx = divmod(int(where[image, unit]), w)
                    rows.append((label, unit, rank, int(image), value, y, xx))
    return pd.DataFrame(rows, columns=["layer", "unit", "rank", "image_id", "value", "y", "x"])
