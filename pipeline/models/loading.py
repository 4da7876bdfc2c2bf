"""Building a workflow's model and loading its weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Workflow
from pipeline.errors import UserError
from pipeline.layout import RunLayout
from pipeline.models import get_model, takes_image_size

if TYPE_CHECKING:
    import torch
    from torch import nn


def build_model(workflow: Workflow, num_classes: int) -> nn.Module:
    """A freshly initialised instance of the workflow's ``[model] name``."""
    kwargs: dict = {"num_classes": num_classes}
    if takes_image_size(workflow.model.name):  # pass only the arguments the builder takes
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


def read_state_dict(path: Path, source: str, option: str = "[model] checkpoint") -> dict:
    """The state dict in the weights file ``path`` (or under its ``"model"`` key, as in a
    training checkpoint); memory-mapped where the format allows, so checking is cheap.
    ``option`` is the setting that named the file, which the errors tell the user to fix."""
    import torch

    if not path.is_file():
        raise UserError(f"{path}: model weights not found; check {option} in {source}")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler raises anything on a foreign file
        reason = " ".join(str(error).split()) or type(error).__name__
        if len(reason) > 100:  # torch's explanations run to paragraphs: keep the first words
            reason = reason[:100].rsplit(" ", 1)[0] + " ..."
        raise UserError(f"{path}: not a PyTorch weights file ({type(error).__name__}: {reason}); "
                        f"set {option} to a file saved with "
                        "torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise UserError(f"{path}: holds a {type(state).__name__}, not a state dict; save "
                        f"torch.save(model.state_dict(), path) and point {option} at it")
    return state


def fit_state_dict(model: nn.Module, state: dict, path: Path, name: str, num_classes: int,
                   assign: bool = False, option: str = "[model] checkpoint") -> None:
    """Load ``state`` into ``model``, or say in one line why these weights are not its (and,
    for a file another ``option`` than ``[model] checkpoint`` named, which setting that is)."""
    try:
        model.load_state_dict(state, assign=assign)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
        named = "" if option == "[model] checkpoint" else f" (from {option})"
        raise UserError(f"{path}{named}: weights do not fit model '{name}' with {num_classes} "
                        f"classes ({detail}); check [model] name and the data's classes") from None


def load_model(workflow: Workflow, layout: RunLayout, num_classes: int,
               device: torch.device) -> nn.Module:
    """The workflow's model with its weights loaded, in eval mode on ``device``."""
    spec = workflow.model
    if spec.weights and not spec.checkpoint:
        from pipeline.models.torchvision_models import load_torchvision_model, resolve_weights

        weights = resolve_weights(spec.name, spec.weights, workflow.source)
        return load_torchvision_model(spec.name, weights, spec.download).eval().to(device)
    model = build_model(workflow, num_classes)
    path = checkpoint_path(workflow, layout)
    fit_state_dict(model, read_state_dict(path, workflow.source), path, spec.name, num_classes)
    return model.eval().to(device)
