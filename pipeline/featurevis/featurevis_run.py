"""The featurevis stage's work: plan each layer, then optimise and write it a block at a time.

How a block is optimised: :mod:`pipeline.featurevis.optimise`; the store and how a killed run
continues: :mod:`pipeline.featurevis.store`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.device import out_of_memory
from pipeline.featurevis.meta import FeatureVisMeta, FeatureVisPlan
from pipeline.featurevis.optimise import (
    OBJECTIVES,
    Optimised,
    Truncated,
    centre_position,
    centre_side,
    frozen,
    optimise,
)
from pipeline.featurevis.store import VisLayer, create_store, finish_store, write_block
from pipeline.interp.receptive_field import ReceptiveField, module_call_counts
from pipeline.progress import batch_sizes_written, progress_bar, record_units, units_written


@dataclass(frozen=True)
class Recipe:
    """The optimisation's settings (``[featurevis]``): Adam ``steps`` of size ``lr``, images
    drawn with ``seed``, ``batch_size`` units at a time."""

    steps: int
    lr: float
    seed: int
    batch_size: int


@dataclass(frozen=True)
class LayerUnits:
    """A layer to optimise: label, module, receptive field and the units (numbers) chosen."""

    label: str
    module: str
    field: ReceptiveField
    units: tuple[int, ...]


def plan_layers(model: nn.Module, layers: Sequence[LayerUnits], input_size: int,
                channels: int, device: torch.device) -> list[VisLayer]:
    """Each layer's centre objective: an input the size of its receptive field and a margin
    (:func:`~pipeline.featurevis.optimise.centre_side`, at most the network's input), and the
    map cell whose field is centred on it."""
    counts = module_call_counts(model)
    planned = []
    for layer in layers:
        calls = counts.get(layer.module, 1) if counts else 0
        forward = Truncated(model, layer.module, calls)

        def map_hw(side: int, forward: Truncated = forward) -> tuple[int, int]:
            with frozen(model), torch.no_grad():
                shape = forward(torch.full((1, channels, side, side), 0.5, device=device)).shape
            return int(shape[-2]), int(shape[-1])

        side = centre_side(layer.field, input_size)
        try:
            cells = map_hw(side)
        except RuntimeError as error:  # too small for some layer on the way: the whole input
            if out_of_memory(error):  # not a reason to try the whole, larger input
                raise
            side = input_size
            cells = map_hw(side)
        planned.append(VisLayer(layer.label, layer.module, layer.units, side,
                                centre_position(layer.field, cells, side), layer.field.size,
                                calls))
    return planned


def generators(seed: int, label: str, units: Sequence[int],
               objective: str) -> list[torch.Generator]:
    """One generator per unit and objective, seeded by the workflow's seed, the layer, the
    unit and the objective: an image is drawn the same whatever else shares its block (and
    whatever ``batch_size``), so a resumed run draws what an uninterrupted one did."""
    names = zlib.crc32(f"{label}/{objective}".encode())
    return [torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, names, unit]).generate_state(1)[0]))
        for unit in units]


def write_featurevis(staged: Path, model: nn.Module, layers: Sequence[VisLayer],
                     recipe: Recipe, input_size: int, channels: int,
                     normalise: Callable[[torch.Tensor], torch.Tensor],
                     data_peaks: dict[str, np.ndarray], device: torch.device) -> None:
    """Create (or continue) the store at ``staged`` and optimise every layer's units;
    ``normalise`` maps images in [0, 1] to the network's input."""
    plan = FeatureVisPlan(recipe.steps, recipe.lr, recipe.seed, input_size, channels,
                          tuple(layer.label for layer in layers),
                          tuple(len(layer.units) for layer in layers))
    meta = FeatureVisMeta(recipe.steps, recipe.lr, recipe.seed, input_size, OBJECTIVES,
                          str(device))
    create_store(staged, layers, plan, meta, data_peaks)
    done = [min(units_written(staged, layer.label), len(layer.units)) for layer in layers]
    total = sum(len(layer.units) for layer in layers)
    print(f"[featurevis] {total} units x {len(OBJECTIVES)} objectives x {recipe.steps} steps "
          f"on {device}" + (" (a network at 224 px takes hours on a CPU: lower [featurevis] "
                            "steps or units, or run it on a GPU)"
                            if device.type == "cpu" and input_size >= 160 and
                            total * recipe.steps > 50_000 else ""))
    if sum(done):
        print(f"[featurevis] resuming: {sum(done)} of {total} units already optimised")
        earlier = batch_sizes_written(staged) - {recipe.batch_size}
        if earlier:
            print(f"[featurevis] those were optimised in blocks of {sorted(earlier)[0]}, the "
                  f"rest in blocks of {recipe.batch_size}: equal up to rounding in the last "
                  "bits, not bitwise")
    steps = len(OBJECTIVES) * recipe.steps
    bar = progress_bar("featurevis", total=total * steps, unit="step")
    bar.update(sum(done) * steps)
    with frozen(model):
        for index, layer in enumerate(layers):
            forward = Truncated(model, layer.module, layer.calls)
            for start in range(done[index], len(layer.units), recipe.batch_size):
                units = layer.units[start:start + recipe.batch_size]

                def advance(n: int, k: int = len(units)) -> None:
                    bar.update(n * k)

                mean = optimise(forward, units, input_size, channels, normalise, "mean",
                                generators(recipe.seed, layer.label, units, "mean"),
                                recipe.steps, recipe.lr, device=device, advance=advance)
                centre = optimise(forward, units, layer.side, channels, normalise, "centre",
                                  generators(recipe.seed, layer.label, units, "centre"),
                                  recipe.steps, recipe.lr, position=layer.position,
                                  device=device, advance=advance)
                write_block(staged, layer.label, start, _block(mean, centre))
                record_units(staged, layer.label, start + len(units), recipe.batch_size)
    bar.close()
    for line in summaries(staged, layers, recipe.steps):
        print(line)
    finish_store(staged)


def summaries(staged: Path, layers: Sequence[VisLayer], steps: int) -> list[str]:
    """:func:`summary` of every layer of the store at ``staged``."""
    import zarr

    from pipeline.labelled import array_in, group_in

    root = zarr.open_group(staged, mode="r")
    lines = []
    for layer in layers:
        group = group_in(root, layer.label)
        lines.append(summary(layer.label, layer.units, np.asarray(array_in(group, "peak")[0]),
                             np.asarray(array_in(group, "data_peak")[...]),
                             np.asarray(np.asarray(array_in(group, "driven")[...]).any(axis=0)),
                             steps))
    return lines


def _block(mean: Optimised, centre: Optimised) -> dict[str, np.ndarray]:
    """The store's arrays of one block (objectives in :data:`OBJECTIVES` order)."""
    results = (mean, centre)
    return {"images": mean.images, "centre": centre.images,
            "value": np.stack([r.value for r in results]),
            "peak": np.stack([r.peak for r in results]),
            "start": np.stack([r.start for r in results]),
            "driven": np.stack([driven(r) for r in results])}


def driven(result: Optimised) -> np.ndarray:
    """Whether the optimisation raised each unit: its objective ended above where it started
    (by more than rounding). A dead ReLU never is (zero whatever the input); nor is a unit
    still at zero after the last step (its image then shows nothing that drives it). A unit
    that rose but stayed below zero (a SiLU's) is: its image shows what raises it."""
    return result.value > result.start + 1e-4 * np.maximum(1.0, np.abs(result.start))


def summary(label: str, units: Sequence[int], peak: np.ndarray, data_peak: np.ndarray,
            driven_any: np.ndarray, steps: int) -> str:
    """One line per layer: how many optimised images drive their unit past its strongest
    activation on the data, and the units neither objective raised."""
    line = (f"[featurevis] {label}: {int((peak > data_peak).sum())} of {len(units)} images "
            "drive their unit past its strongest activation on the data")
    dead = [units[int(i)] for i in np.flatnonzero(~driven_any)]
    if dead:
        shown = ", ".join(str(u) for u in dead[:8]) + (" ..." if len(dead) > 8 else "")
        line += (f"; {len(dead)} not raised by either objective in {steps} steps (unit "
                 f"{shown}): dead, or slow to start")
    return line
