"""How images become network inputs: resize, centre crop, normalise.

With torchvision weights the weights' own transforms decide (their resize, crop, mean, std and
interpolation), as torchvision's reference evaluation does; otherwise ``[model]`` does. Training
with ``[train] augment`` uses :meth:`Preprocessing.training_transform` instead, on the training
images only: the analysed images always get the one deterministic centre crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import Workflow

if TYPE_CHECKING:
    import numpy as np
    import torch
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
        """PIL image -> normalised float tensor ``[3, crop, crop]``: :meth:`pixels`, then
        :meth:`normalise` (one definition, so a cached crop gives the very same input)."""
        from torchvision.transforms import v2

        return v2.Compose([*self.pixels().transforms, *self.normalise().transforms])

    def pixels(self) -> v2.Compose:
        """PIL image -> the resized, centre-cropped ``uint8`` tensor ``[3, crop, crop]``: what
        the network sees before scaling, losslessly storable (the deconv stage decodes each
        image once into such crops)."""
        from torchvision.transforms import InterpolationMode, v2

        return v2.Compose([
            v2.PILToTensor(),
            v2.Resize(self.resize, interpolation=InterpolationMode(self.interpolation),
                      antialias=True),
            v2.CenterCrop(self.crop),
        ])

    def normalise(self) -> v2.Compose:
        """``uint8`` crops ``[..., 3, H, W]`` (one image or a batch) -> normalised float32."""
        import torch
        from torchvision.transforms import v2

        return v2.Compose([v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(self.mean), list(self.std))])

    def training_transform(self, resize: int = 0) -> v2.Compose:
        """PIL image -> a random ``crop`` square of its centre, flipped left-right half the time.

        As in Zeiler & Fergus (2013, sec. 3): the shorter side is resized to ``resize`` (0:
        ``crop * 256 / 224``, the paper's 256 for 224 crops), the centre square of that side is
        cut out, and a ``crop`` x ``crop`` square at a random place in it is the input. The
        random place and flip come from torch's global generator (torchvision's v2 transforms
        draw with ``torch.randint`` / ``torch.rand``), so the train stage's reseeding each epoch
        makes them the same in a resumed run.
        """
        import torch
        from torchvision.transforms import InterpolationMode, v2

        side = resize or round(self.crop * 256 / 224)
        return v2.Compose([
            v2.PILToTensor(),
            v2.Resize(side, interpolation=InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(side),
            v2.RandomCrop(self.crop),
            v2.RandomHorizontalFlip(),
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


def shown_pixels(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]
                 ) -> np.ndarray:
    """A normalised input ``[3, H, W]`` as the pixels the network saw: uint8 ``[H, W, 3]``
    (the normalisation undone, clipped to 0..1, rounded), for pages that show the input."""
    import numpy as np

    mean_ = np.asarray(mean, np.float32)[:, None, None]
    std_ = np.asarray(std, np.float32)[:, None, None]
    values = np.clip(image.detach().cpu().numpy() * std_ + mean_, 0, 1)
    return np.rint(values * 255).astype(np.uint8).transpose(1, 2, 0)
