"""Figure 5: how far features move, and whether the class holds, when an image is shifted,
scaled or rotated.

The transforms act on the preprocessed, normalised input tensor (bilinear, with the space
uncovered filled with zero, the data set's mean grey), so every copy has the network's input
size and differs from the original only by the transform. Ranges follow the paper: vertical
translation by -60 to +60 px at 224 px (here as the same fraction of the input side, 13 steps
with 0), scaling by 1.0 to 1.8 about the centre (9 steps), rotation by 0 to 350 degrees in steps
of 10 (36 steps, torchvision's sense: clockwise). The untransformed amount (shift 0, scale 1,
angle 0) is the original image itself, not a resampled copy.

Two feature vectors are compared, as in the paper: layer 1, the whole output of the first
analysed layer (flattened), and the last hidden layer, the input of the model's last
``nn.Linear`` (for a model without one, the output of the last analysed layer). The distance is
Euclidean, between the original's vector and the transformed copy's, unnormalised; each row
also carries the original's vector norm, so a page can put several images on one axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from pipeline.experiments.capture import forward_capturing, last_linear

TRANSFORMS = ("translation", "scale", "rotation")
TRANSLATION_STEPS = 13  # -60 .. +60 px at 224 px, in steps of 10 px
SCALE_STEPS = 9  # 1.0 .. 1.8
ROTATION_STEP = 10  # degrees, 0 .. 350
COLUMNS = ("transform", "amount", "distance_layer1", "distance_last", "prob_true", "predicted",
           "predicted_prob", "norm_layer1", "norm_last")


def amounts(transform: str, side: int) -> np.ndarray:
    """The amounts of ``transform`` for an input ``side`` px wide: pixels of vertical shift
    (positive: down), scale factors, or degrees (see the module doc)."""
    if transform == "translation":
        half = TRANSLATION_STEPS // 2
        return side * 60 / 224 * np.arange(-half, half + 1) / half
    if transform == "scale":
        return np.linspace(1.0, 1.8, SCALE_STEPS)
    if transform == "rotation":
        return np.arange(0, 360, ROTATION_STEP, dtype=np.float64)
    raise ValueError(f"unknown transform {transform!r}; use one of {TRANSFORMS}")


IDENTITY = {"translation": 0.0, "scale": 1.0, "rotation": 0.0}


def example_amounts(transform: str, side: int, count: int = 5) -> np.ndarray:
    """``count`` of the amounts, evenly spread from the first to the last: the copies a page
    shows so a reader sees what "scale 1.8" does to an image."""
    values = amounts(transform, side)
    if transform == "rotation" and count == 5:  # quarter turns, then the last: 0 .. 270, 350
        return np.array([0.0, 90.0, 180.0, 270.0, float(values[-1])])
    return values[np.round(np.linspace(0, len(values) - 1, count)).astype(int)]


def transform_image(image: Tensor, transform: str, amount: float) -> Tensor:
    """``image`` ``[..., C, H, W]`` (normalised) shifted down by ``amount`` px, scaled by it
    about the centre, or rotated by it in degrees; the original itself at the identity."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if transform not in IDENTITY:
        raise ValueError(f"unknown transform {transform!r}; use one of {TRANSFORMS}")
    if amount == IDENTITY[transform]:
        return image
    angle = float(amount) if transform == "rotation" else 0.0
    shift = [0.0, float(amount)] if transform == "translation" else [0.0, 0.0]
    scale = float(amount) if transform == "scale" else 1.0
    return F.affine(image, angle=angle, translate=shift, scale=scale, shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR, fill=0.0)


@dataclass(frozen=True)
class FeatureLayers:
    """Where the two feature vectors are read: module names, and how the page names them."""

    first: str  # its output is layer 1's vector
    last: str  # its input (a Linear) or output (no Linear) is the last hidden layer's vector
    last_is_input: bool
    first_label: str = ""
    last_label: str = ""


def feature_layers(model: nn.Module, first_module: str, last_module: str,
                   first_label: str = "", last_label: str = "") -> FeatureLayers:
    """Layer 1 is ``first_module`` (the first analysed layer); the last hidden layer is the
    input of the model's last ``nn.Linear``, or ``last_module``'s output if it has none."""
    linear = last_linear(model)
    if linear is None:
        return FeatureLayers(first_module, last_module, False, first_label,
                             last_label or last_module)
    return FeatureLayers(first_module, linear, True, first_label, f"input of {linear}")


def _vectors(model: nn.Module, images: Tensor, layers: FeatureLayers
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities, layer-1 vectors and last-hidden-layer vectors (``[B, D]``, float32)."""
    inputs = (layers.last,) if layers.last_is_input else ()
    outputs = (layers.first,) + (() if layers.last_is_input else (layers.last,))
    probabilities, seen_outputs, seen_inputs = forward_capturing(model, images, outputs, inputs)
    last = seen_inputs[layers.last] if layers.last_is_input else seen_outputs[layers.last]
    return (probabilities, seen_outputs[layers.first].flatten(1).float(),
            last.flatten(1).float())


def measure(model: nn.Module, image: Tensor, true_class: int, layers: FeatureLayers,
            batch_size: int = 64, transforms: tuple[str, ...] = TRANSFORMS) -> pd.DataFrame:
    """One row per transform (of ``transforms``) and amount for the preprocessed ``image``
    ``[C, H, W]`` of class ``true_class`` (columns :data:`COLUMNS`), ``batch_size``
    transformed copies per forward pass.

    The identity rows are the original's own values (distance 0): running the same image again
    inside a batch would only add the rounding of another batch size."""
    device = next(model.parameters()).device
    image = image.to(device)
    probabilities, first, last = _vectors(model, image[None], layers)
    original = (0.0, 0.0, float(probabilities[0, true_class]), int(probabilities[0].argmax()),
                float(probabilities[0].max()))
    steps = [(transform, float(amount)) for transform in TRANSFORMS if transform in transforms
             for amount in amounts(transform, image.shape[-2])]  # vertical: the height
    moved = [step for step in steps if step[1] != IDENTITY[step[0]]]
    values: dict[tuple[str, float], tuple] = {}
    for start in range(0, len(moved), batch_size):
        batch_steps = moved[start:start + batch_size]
        batch = torch.stack([transform_image(image, transform, amount)
                             for transform, amount in batch_steps])
        probabilities, first_moved, last_moved = _vectors(model, batch, layers)
        distance_first = torch.linalg.vector_norm(first_moved - first, dim=1)
        distance_last = torch.linalg.vector_norm(last_moved - last, dim=1)
        best = probabilities.max(dim=1)
        for j, step in enumerate(batch_steps):
            values[step] = (float(distance_first[j]), float(distance_last[j]),
                            float(probabilities[j, true_class]), int(best.indices[j]),
                            float(best.values[j]))
    frame = pd.DataFrame([(*step, *values.get(step, original)) for step in steps],
                         columns=list(COLUMNS[:7]))
    frame["norm_layer1"] = float(torch.linalg.vector_norm(first))
    frame["norm_last"] = float(torch.linalg.vector_norm(last))
    return frame
