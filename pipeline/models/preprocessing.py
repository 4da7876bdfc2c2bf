"""How images become network inputs: resize, centre crop, normalise.

With torchvision weights the weights' own transforms decide (their resize, crop, mean, std and
interpolation), as torchvision's reference evaluation does; otherwise ``[model]`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import Workflow

if TYPE_CHECKING:
    from torchvision.transforms import v2


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop``, normalise."""

    crop: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def transform(self) -> v2.Compose:
        """PIL image -> normalised float tensor ``[3, crop, crop]``."""
        import torch
        from torchvision.transforms import InterpolationMode, v2

        return v2.Compose([
            v2.PILToTensor(),
            v2.Resize(self.resize, interpolation=InterpolationMode(self.interpolation),
                      antialias=True),
            v2.CenterCrop(self.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(self.mean), list(self.std)),
        ])


def preprocessing(workflow: Workflow) -> Preprocessing:
    """The preprocessing of the workflow's model (from its torchvision weights if it has them)."""
    model = workflow.model
    if model.weights:
        from pipeline.models.torchvision_models import resolve_weights

        preset = resolve_weights(model.name, model.weights, workflow.source).transforms()
        return Preprocessing(crop=int(preset.crop_size[0]), resize=int(preset.resize_size[0]),
                             mean=tuple(preset.mean), std=tuple(preset.std),
                             interpolation=preset.interpolation.value)
    return Preprocessing(crop=model.image_size, resize=model.resize_size or model.image_size,
                         mean=model.mean, std=model.std)
