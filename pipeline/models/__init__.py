"""Model registry in torchvision's style: builders register by name, the workflow picks one.

A name in the workflow file maps to a builder function, so adding an architecture is one
decorated function and the error for a typo can list what exists.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from pipeline.errors import UserError

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator that registers a builder under ``name`` (default: the function's name)."""

    def wrap(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in BUILTIN_MODELS:
            raise ValueError(f"a model named {key!r} is already registered")
        BUILTIN_MODELS[key] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(BUILTIN_MODELS)


def takes_image_size(name: str) -> bool:
    """Whether the registered builder ``name`` is built for a given input size (zfnet_small)."""
    builder = BUILTIN_MODELS.get(name)
    return builder is not None and "image_size" in inspect.signature(builder).parameters


def default_image_size(name: str) -> int:
    """The input size a model is made for: its builder's default, else ImageNet's 224."""
    if not takes_image_size(name):
        return 224
    return int(inspect.signature(BUILTIN_MODELS[name]).parameters["image_size"].default)


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs`` (e.g. ``num_classes``); other names
    are timm architectures (``timm/resnet50``) or torchvision's classification models (built
    without weights)."""
    from pipeline.models.timm_models import build_timm_model, is_timm_name
    from pipeline.models.torchvision_models import build_torchvision_model, torchvision_names

    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name](**kwargs)
    if is_timm_name(name):
        return build_timm_model(name, num_classes=int(kwargs.get("num_classes", 1000)))
    if name in torchvision_names():
        return build_torchvision_model(name, num_classes=int(kwargs.get("num_classes", 1000)))
    known = list_models() + torchvision_names()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown model {name!r}; {hint}valid names: {', '.join(list_models())} "
                    "any torchvision classification model (alexnet, vgg16, resnet18, ...) or a "
                    "timm model as 'timm/<architecture>'")


from pipeline.models import zfnet  # noqa: E402,F401  (registers the builders)
