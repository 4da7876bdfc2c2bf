"""How images become network inputs: resize, centre crop, normalise.

With torchvision weights the weights' own transforms decide (their resize, crop, mean, std and
interpolation), as torchvision's reference evaluation does; otherwise ``[model]`` does. Training
with ``[train] augment`` uses :meth:`Preprocessing.training_transform` instead, on the training
images only: the analysed images always get the one deterministic centre crop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torchvision.transforms import v2

    from pipeline.config import ModelConfig


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``input_size`` x ``input_size`` (the
    network's input side), normalise."""

    input_size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def transform(self) -> v2.Compose:
        """PIL image -> normalised float tensor ``[C, input_size, input_size]``: :meth:`pixels`,
        then :meth:`normalise` (one definition, so a cached crop gives the very same input)."""
        from torchvision.transforms import v2

        return v2.Compose([*self.pixels().transforms, *self.normalise().transforms])

    def pixels(self) -> v2.Compose:
        """PIL image -> the resized, centre-cropped ``uint8`` tensor ``[C, input_size,
        input_size]``, C = ``len(mean)``, the image first converted to that many channels (grey,
        RGB or RGBA,
        :class:`pipeline.data.images.ToChannels`): what the network sees before scaling,
        losslessly storable (the deconv stage decodes each image once into such crops)."""
        from torchvision.transforms import InterpolationMode, v2

        from pipeline.data.images import ToChannels

        return v2.Compose([
            ToChannels(len(self.mean)),
            v2.PILToTensor(),
            v2.Resize(self.resize, interpolation=InterpolationMode(self.interpolation),
                      antialias=True),
            v2.CenterCrop(self.input_size),
        ])

    def normalise(self) -> v2.Compose:
        """``uint8`` crops ``[..., 3, H, W]`` (one image or a batch) -> normalised float32."""
        import torch
        from torchvision.transforms import v2

        return v2.Compose([v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(self.mean), list(self.std))])

    def training_transform(self, resize: int = 0) -> v2.Compose:
        """PIL image -> a random ``input_size`` square of its centre, flipped left-right half the
        time.

        As in Zeiler & Fergus (2013, sec. 3): the shorter side is resized to ``resize`` (0:
        ``input_size * 256 / 224``, the paper's 256 for 224 px inputs), the centre square of
        that side is cut out, and an ``input_size`` square at a random place in it is the input. The
        random place and flip come from torch's global generator (torchvision's v2 transforms
        draw with ``torch.randint`` / ``torch.rand``), so the train stage's reseeding each epoch
        makes them the same in a resumed run.
        """
        import torch
        from torchvision.transforms import InterpolationMode, v2

        from pipeline.data.images import ToChannels

        side = resize or round(self.input_size * 256 / 224)
        return v2.Compose([
            ToChannels(len(self.mean)),  # grey, RGB or RGBA, as for pixels()
            v2.PILToTensor(),
            v2.Resize(side, interpolation=InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(side),
            v2.RandomCrop(self.input_size),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(self.mean), list(self.std)),
        ])


def preprocessing(model: ModelConfig, source: str) -> Preprocessing:
    """The preprocessing of ``[model]``'s model: from its published weights (torchvision's
    or timm's) if it names them, else ``[model]``'s, with one mean and std per input channel
    of the model. ``source``: the workflow file, which errors name."""
    from pipeline.models.pretrained import named_weights

    published = named_weights(model, source)
    if published is not None:  # an option the workflow file sets still wins
        preset = published.preset()
        fields = {"image_size": "input_size", "resize_size": "resize", "mean": "mean",
                  "std": "std"}
        preset.update({fields[option]: getattr(model, option) for option in model.overrides})
        if "image_size" in model.overrides and "resize_size" not in model.overrides:
            preset["resize"] = round(preset["resize"] * preset["input_size"] / published.preset()[
                "input_size"])  # the published crop ratio, at the workflow's size
        preset["resize"] = preset["resize"] or preset["input_size"]  # resize_size 0: to the input
        if len(preset["mean"]) != 3 and len(preset["mean"]) != input_channels(model):
            raise UserError(f"{source}: [model] mean and std have "
                            f"{len(preset['mean'])} values, and the model reads "
                            f"{input_channels(model)} channels; give that many of each")
        return Preprocessing(**preset)
    mean, std = per_channel(model, input_channels(model), source)
    return Preprocessing(input_size=model.image_size, resize=model.resize_size or model.image_size,
                         mean=mean, std=std)


def per_channel(model: ModelConfig, channels: int, source: str
                ) -> tuple[tuple[float, ...], ...]:
    """``[model] mean`` and ``std`` for a model of ``channels`` input channels. Left at
    ImageNet's RGB values, a model of another channel count gets their average for every
    channel past (or instead of) R, G, B; values set in the file must fit the model."""
    from pipeline.config import ModelConfig

    if len(model.mean) == channels:
        return model.mean, model.std
    defaults = {spec.name: spec.default for spec in dataclasses.fields(ModelConfig)}
    if model.mean != defaults["mean"] or model.std != defaults["std"]:
        raise UserError(f"{source}: [model] mean and std have {len(model.mean)} "
                        f"values, and the model's first convolution takes {channels} channels; "
                        f"give {channels} of each")

    def fitted(values: tuple[float, ...]) -> tuple[float, ...]:
        average = round(sum(values) / len(values), 3)
        return (values + (average,) * channels)[:channels] if channels > 3 else (
            (average,) * channels)

    return fitted(model.mean), fitted(model.std)


def input_channels(spec: ModelConfig) -> int:
    """The number of channels the first convolution of ``[model]``'s model reads (3 for a
    model without one); built once per model settings, on the meta device."""
    import json

    import torch

    from pipeline.models.evaluation import input_channels as model_channels
    from pipeline.models.factory import FactoryError, factory_digest
    from pipeline.models.loading import build_model

    key = json.dumps([spec.name, spec.factory, dict(spec.factory_args), spec.image_size,
                      factory_digest(spec.factory) if spec.factory else ""], default=str)
    if key not in _CHANNELS:  # one build per model settings (and model file content)
        try:  # shapes only (preflight has said in one line why a model does not build)
            with torch.device("meta"):
                model = build_model(spec, 10)
        except FactoryError:
            model = build_model(spec, 10)  # a function that needs real tensors
        _CHANNELS[key] = model_channels(model, (spec.image_size, spec.image_size))
    return _CHANNELS[key]


#: Input channels of each model built in this process (by its settings, see input_channels).
_CHANNELS: dict[str, int] = {}


def shown_pixels(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]
                 ) -> np.ndarray:
    """A normalised input ``[C, H, W]`` as the pixels the network saw: uint8 ``[H, W, C]``
    (the normalisation undone, clipped to 0..1, rounded), for pages that show the input."""
    import numpy as np

    mean_ = np.asarray(mean, np.float32)[:, None, None]
    std_ = np.asarray(std, np.float32)[:, None, None]
    values = np.clip(image.detach().cpu().numpy() * std_ + mean_, 0, 1)
    return np.rint(values * 255).astype(np.uint8).transpose(1, 2, 0)
