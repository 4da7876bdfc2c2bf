"""Published weights named by ``[model] weights``: torchvision's or timm's, behind one face.

Both bring more than numbers: the preprocessing they were evaluated with and, for ImageNet-1k
weights, the class names. Every caller (loading, preprocessing, class table, preflight) asks
here, so a torchvision and a timm model are handled the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import nn

    from pipeline.config import ModelConfig


class PretrainedWeights(Protocol):
    """Published weights of the workflow's architecture."""

    @property
    def description(self) -> str:
        """What the run card says the weights are."""

    def preset(self) -> dict[str, Any]:
        """crop, resize, mean, std and interpolation the weights were evaluated with."""

    def num_classes(self) -> int:
        """The number of classes the weights classify."""

    def categories(self) -> list[str] | None:
        """The class names, in the model's order, where the weights say them."""

    def check(self, download: bool) -> Path | None:
        """The cached file; None when it will be downloaded; refused when it cannot be."""

    def load(self, download: bool) -> nn.Module:
        """The model with these weights."""


class TorchvisionWeights:
    """A torchvision weights enum (``DEFAULT``, ``IMAGENET1K_V1``, ``AlexNet_Weights....``)."""

    def __init__(self, name: str, weights: str, source: str) -> None:
        from pipeline.models.torchvision_models import resolve_weights

        self.name = name
        self.weights = resolve_weights(name, weights, source)

    @property
    def description(self) -> str:
        return f"torchvision {type(self.weights).__name__}.{self.weights.name}"

    def preset(self) -> dict[str, Any]:
        preset = self.weights.transforms()
        return {"input_size": int(preset.crop_size[0]), "resize": int(preset.resize_size[0]),
                "mean": tuple(preset.mean), "std": tuple(preset.std),
                "interpolation": preset.interpolation.value}

    def num_classes(self) -> int:
        return len(self.weights.meta.get("categories") or ()) or 1000

    def categories(self) -> list[str] | None:
        return list(self.weights.meta.get("categories") or []) or None

    def check(self, download: bool) -> Path | None:
        from pipeline.models.torchvision_models import cached_or_refused

        return cached_or_refused(self.weights, download)

    def load(self, download: bool) -> nn.Module:
        from pipeline.models.torchvision_models import load_torchvision_model

        return load_torchvision_model(self.name, self.weights, download)


def pretrained_weights(spec: ModelConfig, source: str) -> PretrainedWeights | None:
    """The published weights ``[model]`` analyses: None when it names none, or when
    ``[model] checkpoint`` (which wins) names a file. ``source``: the workflow file."""
    return None if spec.checkpoint else named_weights(spec, source)


def named_weights(spec: ModelConfig, source: str) -> PretrainedWeights | None:
    """The published weights ``[model] weights`` names, also beside a checkpoint (whose model
    then takes their preprocessing and class names); None when it names none."""
    if not spec.weights:
        return None
    from pipeline.models.timm_models import TimmWeights, is_timm_name

    if is_timm_name(spec.name):
        return TimmWeights(spec.name, spec.weights, source)
    return TorchvisionWeights(spec.name, spec.weights, source)
