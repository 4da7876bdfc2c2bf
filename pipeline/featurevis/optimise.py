"""The optimisation: many units' images at once, each forward pass stopping at their layer.

Lucid and Lucent render one unit at a time: a batch of one image through the whole network
for every step, which leaves a GPU mostly idle and costs a CPU the full network per unit.
Here a batch holds one image per unit (of one layer), the loss is the sum of each image's own
unit's objective, and since nothing in an eval-mode forward mixes the images of a batch (and
Adam is elementwise), each image follows exactly the gradient it would alone. The forward pass
raises at the layer's module (:class:`Truncated`): nothing above the layer is computed.

Two objectives per unit (:data:`OBJECTIVES`):

- ``mean``: the unit's mean activation over its whole feature map, on an input of the model's
  size (Lucid's ``channel`` objective);
- ``centre``: the unit's activation at the map position whose receptive field is centred on
  the input, on an input only the size of that field (Lucid's ``neuron`` objective, cut to what
  the unit can see): the picture the unit page shows beside the receptive field, and much
  cheaper than a full-size input for shallow layers.

What is kept is the image without any transform, rounded to 8 bits (what the atlas shows),
and the unit's activation on that image, so the atlas compares what the reader sees with the
unit's range on the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from pipeline.featurevis.parameterisation import FourierImage
from pipeline.featurevis.transforms import jitter_shift, random_similarity
from pipeline.interp.receptive_field import ReceptiveField
from pipeline.interp.rules import Redirected
from pipeline.models.evaluation import evaluating

Objective = Literal["mean", "centre"]
OBJECTIVES: tuple[Objective, ...] = ("mean", "centre")
STEPS = 512  # Lucid's default number of optimisation steps (render_vis thresholds=(512,))
LEARNING_RATE = 0.05  # Lucid's Adam step size


class _Reached(Exception):
    """Raised by the hook once the layer's output is in hand: the rest is not computed."""


class Truncated(nn.Module):
    """The model up to (and including) the module named ``module``: its output, with
    gradients. A module the model calls ``calls`` times per forward gives its last call's
    output (the one the activations stage records); ``calls=0`` (untraceable model) runs the
    whole network and keeps the last."""

    def __init__(self, model: nn.Module, module: str, calls: int = 1) -> None:
        super().__init__()
        self.model, self.module, self.calls = model, module, calls

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _args: object, output: torch.Tensor) -> None:
            captured.append(output)
            if len(captured) == self.calls:
                raise _Reached

        handle = self.model.get_submodule(self.module).register_forward_hook(hook)
        try:
            self.model(images)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"module {self.module!r} was not called in the forward pass")
        return captured[-1]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with its parameters' gradients off (only the input is
    optimised), and every rectifier's gradient redirected while inside (Lucid's
    ``redirected_relu_grad``, on by default in its ``render_vis``: starting from a nearly grey
    image, most units are below zero everywhere, and a plain ReLU would give their image no
    gradient at all; :class:`pipeline.interp.rules.Redirected`, which sees functional, method
    and module calls, in place or not). Everything is given back afterwards, also after an
    error."""
    wanted = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in wanted:
            p.requires_grad_(False)
        with evaluating(model, grad=True), Redirected():
            yield model
    finally:
        for p, flag in wanted.items():
            p.requires_grad_(flag)


def centre_side(field: ReceptiveField, input_size: int) -> int:
    """The side of the centre objective's input: the receptive field and, on each side, the
    largest shift of the transforms (a field-sized input would have the field cut at every
    shifted step); at most ``input_size``."""
    size = max(field.size)
    return min(size + 2 * jitter_shift(size), input_size)


def centre_position(field: ReceptiveField, map_hw: tuple[int, int],
                    side: int) -> tuple[int, int]:
    """The map cell whose receptive field is centred on a ``side`` px input."""
    def best(axis: int) -> int:
        centres = field.first[axis] + np.arange(map_hw[axis]) * field.jump[axis] \
            + field.size[axis] / 2
        return int(np.argmin(np.abs(centres - side / 2)))
    return best(0), best(1)


@dataclass(frozen=True)
class Optimised:
    """One batch's result: ``images`` uint8 ``[n, side, side, channels]`` (no transform,
    what the atlas shows), the objective on them (``value``: the mean over the map or the
    centre activation) and the map's largest activation (``peak``), and the objective on the
    initial image (``start``)."""

    images: np.ndarray
    value: np.ndarray
    peak: np.ndarray
    start: np.ndarray


def optimise(forward: Truncated, units: Sequence[int], side: int, channels: int,
             normalise: Callable[[torch.Tensor], torch.Tensor], objective: Objective,
             generators: Sequence[torch.Generator], steps: int = STEPS,
             lr: float = LEARNING_RATE,
             position: tuple[int, int] = (0, 0), device: torch.device | str = "cpu",
             advance: Callable[[int], object] = lambda n: None) -> Optimised:
    """Optimise one image per unit of ``units`` (channels of ``forward``'s output) for
    ``objective`` (``position``: the centre objective's map cell), ``steps`` Adam steps from
    a random spectrum; ``generators`` (one per unit) draw each image's start and transforms.
    ``advance(1)`` after each step."""
    which = torch.as_tensor(np.asarray(units, dtype=np.int64), device=device)
    rows = torch.arange(len(units), device=device)

    def scores(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = forward(normalise(images))[rows, which].float()  # [n, h, w]
        value = maps.mean(dim=(1, 2)) if objective == "mean" else maps[:, position[0],
                                                                        position[1]]
        return value, maps.flatten(1).amax(dim=1)

    image = FourierImage(generators, channels, side, device)
    with torch.no_grad():
        start = scores(image.pixels())[0]
    optimiser = torch.optim.Adam([image.spectrum], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        value, _ = scores(random_similarity(image.pixels(), generators))
        (-value.sum()).backward()
        optimiser.step()
        advance(1)
    with torch.no_grad():
        shown = (image.pixels() * 255).round().to(torch.uint8)
        value, peak = scores(shown.float() / 255)
    return Optimised(shown.permute(0, 2, 3, 1).cpu().numpy(), value.cpu().numpy(),
                     peak.cpu().numpy(), start.cpu().numpy())
