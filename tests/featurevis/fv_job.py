"""A featurevis store of a small real network, written by ``write_featurevis``: imported by the
tests, and run as a script (``python fv_job.py STORE STEPS``) by the kill-and-resume test."""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.featurevis.featurevis_run import LayerUnits, Recipe, plan_layers, write_featurevis
from pipeline.interp.receptive_field import receptive_fields

SIZE = 32
LAYERS = (("conv1", "relu1", 8), ("conv2", "relu2", 6))
BATCH = 2  # units per block: three or four blocks per layer


def network() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 6, 3, padding=1)), ("relu2", nn.ReLU())]))
    with torch.no_grad():  # unit 4 of conv2 never fires
        net.conv2.weight[4] = 0
        net.conv2.bias[4] = -1
    return net.eval()


def write(store: Path, steps: int = 16, seed: int = 0) -> None:
    net = network()
    fields = receptive_fields(net, (SIZE, SIZE))
    chosen = [LayerUnits(label, module, fields[module], tuple(range(n)))
              for label, module, n in LAYERS]
    layers = plan_layers(net, chosen, SIZE, 3, torch.device("cpu"))
    peaks = {label: np.ones(n, np.float32) for label, _, n in LAYERS}
    write_featurevis(store, net, layers, Recipe(steps, 0.05, seed, BATCH), SIZE, 3,
                     lambda images: (images - 0.5) / 0.25, peaks, torch.device("cpu"))


if __name__ == "__main__":
    torch.set_num_threads(1)  # the test's process keeps its threads (and its timing)
    write(Path(sys.argv[1]), int(sys.argv[2]))
