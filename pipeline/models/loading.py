"""Building a workflow's model and loading its weights."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Workflow
from pipeline.errors import UserError
from pipeline.layout import RunLayout
from pipeline.models import BUILTIN_MODELS, get_model

if TYPE_CHECKING:
    import torch
    from torch import nn


def build_model(workflow: Workflow, num_classes: int) -> nn.Module:
    """A freshly initialised instance of the workflow's ``[model] name``."""
    builder = BUILTIN_MODELS.get(workflow.model.name)  # to pass only the arguments it takes
    kwargs: dict = {"num_classes": num_classes}
    if builder is not None and "image_size" in inspect.signature(builder).parameters:
        kwargs["image_size"] = workflow.model.image_size
    return get_model(workflow.model.name, **kwargs)


def checkpoint_path(workflow: Workflow, layout: RunLayout) -> Path:
    """The weights file: ``[model] checkpoint`` if set, else the trained ``model.pt``."""
    if workflow.model.checkpoint:
        return Path(workflow.model.checkpoint).expanduser()
    if workflow.train.enabled:
        return layout.model
    raise UserError(f"{workflow.source}: the model has no weights: set [model] weights (for a "
                    "torchvision model) or [model] checkpoint, or enable [train]")


def load_model(workflow: Workflow, layout: RunLayout, num_classes: int,
               device: torch.device) -> nn.Module:
    """The workflow's model with its weights loaded, in eval mode on ``device``."""
    import torch

    spec = workflow.model
    if spec.weights and not spec.checkpoint:
        from pipeline.models.torchvision_models import load_torchvision_model, resolve_weights

        weights = resolve_weights(spec.name, spec.weights, workflow.source)
        return load_torchvision_model(spec.name, weights, spec.download).eval().to(device)
    model = build_model(workflow, num_classes)
    path = checkpoint_path(workflow, layout)
    if not path.is_file():
        raise UserError(f"{path}: model weights not found; check [model] checkpoint in "
                        f"{workflow.source}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit model '{spec.name}' with {num_classes} "
                        f"classes ({first})") from None
    return model.eval().to(device)
