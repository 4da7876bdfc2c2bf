"""torchvision's classification models, reachable by their torchvision names (``alexnet``,
``vgg16``, ``resnet18``, ...) wherever a workflow or ``pipeline layers`` names a model."""

from __future__ import annotations

from torch import nn


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (not detection or video models)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def build_torchvision_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A torchvision classification model with freshly initialised weights (no download)."""
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
