"""Building a workflow's model and loading its weights.

The model comes from ``[model] name`` (registered, torchvision or ``timm/...``) or from the
user's ``[model] factory``; its weights from published weights (``[model] weights``), a file
(``[model] checkpoint``, in any of the formats :mod:`pipeline.models.checkpoints` reads) or
the run's own training. Each load says which weights, entry and prefix it used.
"""

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

    from pipeline.models.checkpoints import Checkpoint


def build_model(workflow: Workflow, num_classes: int) -> nn.Module:
    """A freshly initialised instance of the workflow's model (``name`` or ``factory``)."""
    spec = workflow.model
    if spec.factory:
        from pipeline.models.factory import build_from_factory

        return build_from_factory(spec.factory, spec.factory_args, num_classes)
    kwargs: dict = {"num_classes": num_classes}
    if takes_image_size(spec.name):  # pass only the arguments the builder takes
        kwargs["image_size"] = spec.image_size
    return get_model(spec.name, **kwargs)


def checkpoint_path(workflow: Workflow, layout: RunLayout) -> Path:
    """The weights file: ``[model] checkpoint`` if set, else the trained ``model.pt``."""
    if workflow.model.checkpoint:
        return Path(workflow.model.checkpoint).expanduser()
    if workflow.train.enabled:
        return layout.model
    raise UserError(f"{workflow.source}: the model has no weights: set [model] weights (for a "
                    "torchvision or timm model) or [model] checkpoint, or enable [train]")


def read_weights(workflow: Workflow, path: Path, option: str = "[model] checkpoint"
                 ) -> Checkpoint:
    """The weights in ``path``, read as ``[model] checkpoint_key`` and ``trust_pickle`` say
    (the run's own files are plain state dicts or training checkpoints)."""
    from pipeline.models.checkpoints import read_checkpoint

    own = option == "[model] checkpoint" and bool(workflow.model.checkpoint)
    return read_checkpoint(path, workflow.source, option,
                           key=workflow.model.checkpoint_key if own else "",
                           trust_pickle=workflow.model.trust_pickle)


def read_state_dict(path: Path, source: str, option: str = "[model] checkpoint") -> dict:
    """The state dict in the weights file ``path`` (a plain one, or under a training
    checkpoint's entry); ``option`` is the setting that named the file, which the errors tell
    the user to fix."""
    from pipeline.models.checkpoints import read_checkpoint

    return read_checkpoint(path, source, option).state


def fit_state_dict(model: nn.Module, state: dict, path: Path, name: str, num_classes: int,
                   assign: bool = False, option: str = "[model] checkpoint") -> str:
    """Load ``state`` into ``model``, its wrapper prefix (``module.``, ``model.``,
    ``_orig_mod.``, ...) taken off, or say in one line why these weights are not its (and, for
    a file another ``option`` than ``[model] checkpoint`` named, which setting that is).
    Returns what was done to the names, for the log ("prefix 'model.' removed")."""
    from pipeline.models.checkpoints import strip_prefix

    try:
        fitted, prefix, dropped = strip_prefix(state, model.state_dict().keys())
    except ValueError as error:
        raise UserError(f"{path}: {error}; save the one to analyse on its own "
                        "(torch.save(module.state_dict(), path))") from None
    try:
        model.load_state_dict(fitted, assign=assign)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
        named = "" if option == "[model] checkpoint" else f" (from {option})"
        raise UserError(f"{path}{named}: weights do not fit model '{name}' with {num_classes} "
                        f"classes ({detail}); check [model] name and the data's classes") from None
    return ", ".join(part for part in (f"prefix '{prefix}' removed" if prefix else "",
                                       f"{dropped} other entries left out" if dropped else "")
                     if part)


def load_model(workflow: Workflow, layout: RunLayout, num_classes: int,
               device: torch.device) -> nn.Module:
    """The workflow's model with its weights loaded, in eval mode on ``device``."""
    return load_described(workflow, layout, num_classes, device)[0]


def load_described(workflow: Workflow, layout: RunLayout, num_classes: int,
                   device: torch.device) -> tuple[nn.Module, str]:
    """(the model with its weights, in eval mode on ``device``; which weights they are, as the
    run's log and the model card say it). The description is printed once per load."""
    from pipeline.models.pretrained import pretrained_weights

    spec = workflow.model
    published = pretrained_weights(workflow)
    if published is not None:
        model, described = published.load(spec.download), published.description
    else:
        model = build_model(workflow, num_classes)
        path = checkpoint_path(workflow, layout)
        checkpoint = read_weights(workflow, path)
        fitted = fit_state_dict(model, checkpoint.state, path, spec.label, num_classes)
        described = checkpoint.where() + (f", {fitted}" if fitted else "")
        if not spec.checkpoint:
            described = f"trained in this run ({described})"
    print(f"[model] {spec.label}, weights: {described}")
    return model.eval().to(device), described
