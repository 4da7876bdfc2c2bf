"""Occluded positions per second, incremental inference against the full forward, in one run.

Figure 7 slides a grey square over an image and reads the tracked map and the class
probabilities with the square at every position. The baseline runs every occluded copy through
the whole network (what the occlusion stage did until 0.11.0); incremental inference
(:mod:`pipeline.experiments.incremental`, after Krypton) recomputes, layer by layer, only the
region the square's footprint reaches. Both get the same model (random weights: the arithmetic
does not depend on them), the same image, the same positions in batches of ``--batch-size``,
and the stage's default tracked layer (the last analysed one); both include the unoccluded
pass and the tracked peak's projection, as the stage runs them. The results are compared:
the largest difference of the tracked totals and probabilities, and how many positions'
most probable class differ.

    python benchmarks/occlusion.py                          # AlexNet then VGG16, 224 px,
                                                            # a 56 px square every 7 px
    python benchmarks/occlusion.py --model vgg16 --positions 256   # a spread subset, faster
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from pipeline.device import compute_on
from pipeline.experiments.occlusion import (
    OccluderGrid,
    incremental_graph,
    occlude,
    occluder_grid,
)
from pipeline.interp import Projector, analysable_layers
from pipeline.models import get_model


class Subset:
    """The grid with only some of its positions, spread over it (the rest are left out of both
    runs alike): what :func:`occlude` reads of a grid."""

    def __init__(self, grid: OccluderGrid, keep: np.ndarray) -> None:
        self.size, self.stride, self.image_hw = grid.size, grid.stride, grid.image_hw
        self.chosen = grid.boxes()[keep]
        self.shape = (1, len(keep))

    def boxes(self) -> np.ndarray:
        return self.chosen


def timed(func, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = func()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def measure(name: str, args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    model = get_model(name).eval().to(device)
    side = (args.image_size, args.image_size)
    module = analysable_layers(model, side)[-1].name
    image = torch.randn(3, *side, generator=torch.Generator().manual_seed(1)).to(device)
    grid: Any = occluder_grid(side, args.size, args.stride)  # or a Subset of it
    positions = grid.shape[0] * grid.shape[1]
    if 0 < args.positions < positions:
        keep = np.random.default_rng(0).choice(positions, args.positions, replace=False)
        grid = Subset(grid, np.sort(keep))
    n = len(grid.boxes())
    projector = Projector(model, method="deconvnet", batch_size=1)
    (graph, why), traced_s = timed(lambda: incremental_graph(model, image, module, grid), device)
    if graph is None:
        print(f"{name}: incremental inference cannot be used ({why})")
        return
    occlude(model, image, 0, module, grid, args.batch_size, projector, incremental=graph)  # warm
    fast, fast_s = timed(lambda: occlude(model, image, 0, module, grid, args.batch_size,
                                         projector, incremental=graph), device)
    full, full_s = timed(lambda: occlude(model, image, 0, module, grid, args.batch_size,
                                         projector), device)
    print(f"{name} at {side[0]} px on {device}, {torch.get_num_threads()} CPU threads: "
          f"tracking {module}, a {grid.size} px square every {grid.stride} px, {n} positions"
          + (f" ({why})" if why else ""))
    print(f"  full forward : {full_s:8.2f} s  {n / full_s:8.1f} positions/s")
    print(f"  incremental  : {fast_s:8.2f} s  {n / fast_s:8.1f} positions/s "
          f"(+ {traced_s:.2f} s once per run: trace and check)")
    print(f"  ratio        : {full_s / fast_s:.2f}x (incremental over the full forward)")
    scale = float(np.abs(full.total).max())
    print(f"  largest difference: tracked total {np.abs(fast.total - full.total).max():.1e} "
          f"(of {scale:.1f}), P(true class) {np.abs(fast.prob_true - full.prob_true).max():.1e}, "
          f"most probable class differs at {int((fast.predicted != full.predicted).sum())} "
          f"of {n} positions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="torchvision model (repeatable; "
                        "default alexnet and vgg16)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--size", type=int, default=0, help="square side (0: a quarter of the "
                        "input, the stage's default)")
    parser.add_argument("--stride", type=int, default=0, help="step between squares (0: an "
                        "eighth of the square)")
    parser.add_argument("--positions", type=int, default=0, help="time only this many "
                        "positions, spread over the grid (0: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="positions per batch")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device, _ = compute_on(args.device, deterministic=True)  # as the stage sets it
    for name in args.model or ["alexnet", "vgg16"]:
        measure(name, args, device)


if __name__ == "__main__":
    main()
