"""Units per second of the featurevis stage against a one-unit-at-a-time loop, in one run.

The baseline renders as Lucid / Lucent do: one unit at a time, a batch of one image through the
whole network at every step (the objective read by a hook), for both objectives at the model's
input size. The stage (``write_featurevis``, what ``run featurevis`` does once the model is
loaded) optimises a block of units together, stops the forward pass at their layer, and gives
the centre objective an input only the size of the unit's receptive field. Both run the same
recipe (parameterisation, transforms, Adam, the number of steps), on the same model (random
weights: the time does not depend on them).

Each unit costs the loop the same, so the loop is timed on ``--loop-units`` units per layer and
its rate applied to the layer; the stage is timed on ``--units`` units per layer (0: all), in
blocks of ``--batch-size``. The stage's units per second over all layers are weighed the same
way (per-layer time per unit x the layer's units).

    python benchmarks/featurevis.py                    # the demo's zfnet_small at 64 px, all units
    python benchmarks/featurevis.py --model alexnet --units 16 --steps 16
    python benchmarks/featurevis.py --model alexnet --units 0 --steps 512 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.device import compute_on
from pipeline.featurevis.featurevis_run import LayerUnits, Recipe, plan_layers, write_featurevis
from pipeline.featurevis.optimise import Truncated, centre_position, frozen, optimise
from pipeline.interp import analysable_layers, receptive_fields
from pipeline.models import get_model

SIZES = {"zfnet_small": 64, "alexnet": 224, "vgg16": 224}


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, int]:
    size = SIZES.get(name, 224)
    torch.manual_seed(0)
    model = get_model(name, num_classes=10, image_size=size) if name == "zfnet_small" else \
        get_model(name, num_classes=1000)
    return model.to(device).eval(), size


def normaliser(device: torch.device):
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(-1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(-1, 1, 1)
    return lambda images: (images - mean) / std


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_stage(model, layers, size, recipe, device) -> dict[str, float]:
    """Seconds per layer of the stage's work over ``layers`` (their chosen units)."""
    planned = plan_layers(model, layers, size, 3, device)
    with frozen(model):  # warm-up, not timed
        optimise(Truncated(model, planned[0].module), [0], size, 3, normaliser(device), "mean",
                 [torch.Generator().manual_seed(0)], 2, device=device)
    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        for layer in planned:  # one layer at a time, to time each
            store = Path(folder) / f"{layer.label}.zarr"
            peaks = {layer.label: np.zeros(len(layer.units), np.float32)}
            sync(device)
            start = time.perf_counter()
            write_featurevis(store, model, [layer], recipe, size, 3, normaliser(device), peaks,
                             device)
            sync(device)
            seconds[layer.label] = time.perf_counter() - start
    return seconds


def time_loop(model, layers, size, steps, lr, device) -> dict[str, float]:
    """Seconds per layer of the one-unit loop over ``layers`` (their chosen units): the whole
    network for every step, both objectives at the input size."""
    seconds = {}
    normalise = normaliser(device)
    with frozen(model):
        for layer in layers:
            whole = Truncated(model, layer.module, calls=0)  # runs to the network's output
            with torch.no_grad():
                map_hw = tuple(whole(torch.zeros(1, 3, size, size, device=device)).shape[-2:])
            position = centre_position(layer.field, (int(map_hw[0]), int(map_hw[1])), size)
            optimise(whole, [0], size, 3, normalise, "mean",  # warm-up, not timed
                     [torch.Generator().manual_seed(0)], 2, lr, device=device)
            sync(device)
            start = time.perf_counter()
            for unit in layer.units:
                generator = [torch.Generator().manual_seed(unit)]
                optimise(whole, [unit], size, 3, normalise, "mean", generator, steps, lr,
                         device=device)
                optimise(whole, [unit], size, 3, normalise, "centre", generator, steps, lr,
                         position=position, device=device)
            sync(device)
            seconds[layer.label] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zfnet_small", help="a registered model name")
    parser.add_argument("--steps", type=int, default=64, help="Adam steps per image (the "
                        "stage's default is 512; the ratio barely depends on it)")
    parser.add_argument("--units", type=int, default=0, help="units per layer the stage "
                        "optimises (0: all)")
    parser.add_argument("--loop-units", type=int, default=2, help="units per layer the "
                        "one-unit loop is timed on")
    parser.add_argument("--batch-size", type=int, default=64, help="the stage's units per block")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device, _ = compute_on(args.device)  # float32, TF32 off: as the stage by default
    model, size = build(args.model, device)
    fields = receptive_fields(model, (size, size))
    infos = analysable_layers(model, (size, size))
    channels = {info.label: info.out_shape[0] for info in infos}

    def chosen(n: int) -> list[LayerUnits]:
        return [LayerUnits(info.label, info.name, fields[info.name],
                           tuple(range(min(n, info.out_shape[0]) if n else info.out_shape[0])))
                for info in infos]

    recipe = Recipe(args.steps, 0.05, 0, args.batch_size)
    stage_layers, loop_layers = chosen(args.units), chosen(args.loop_units)
    stage = time_stage(model, stage_layers, size, recipe, device)
    loop = time_loop(model, loop_layers, size, args.steps, 0.05, device)
    print(f"{args.model} at {size} px on {device}, {args.steps} steps, both objectives; "
          f"stage: {args.units or 'all'} units per layer in blocks of {args.batch_size}; "
          f"loop: {args.loop_units} per layer")
    print(f"{'layer':>8} {'units':>6} {'stage s/unit':>13} {'loop s/unit':>12} {'ratio':>7} "
          f"{'stage s/layer':>14}")
    stage_total = loop_total = 0.0
    for s_layer, l_layer in zip(stage_layers, loop_layers, strict=True):
        label = s_layer.label
        per_stage = stage[label] / len(s_layer.units)
        per_loop = loop[label] / len(l_layer.units)
        stage_total += per_stage * channels[label]
        loop_total += per_loop * channels[label]
        print(f"{label:>8} {channels[label]:>6} {per_stage:>13.4f} {per_loop:>12.4f} "
              f"{per_loop / per_stage:>6.1f}x {per_stage * channels[label]:>14.1f}")
    units = sum(channels.values())
    print(f"all {units} units: stage {units / stage_total:.2f} units/s, loop "
          f"{units / loop_total:.3f} units/s: the stage is {loop_total / stage_total:.1f}x the "
          f"one-unit loop (the whole stage: {stage_total:.0f} s at {args.steps} steps)")


if __name__ == "__main__":
    main()
