"""Building a workflow's model and loading its weights.

The model comes from ``[model] name`` (registered, torchvision or ``timm/...``) or from the
user's ``[model] factory``; its weights from published weights (``[model] weights``), a file
(``[model] checkpoint``, in any of the formats :mod:`pipeline.models.checkpoints` reads) or
the run's own training. Each load says which weights, entry and prefix it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.models import get_model, takes_image_size

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipeline.config import ModelConfig
    from pipeline.models.checkpoints import Checkpoint


def build_model(spec: ModelConfig, num_classes: int) -> nn.Module:
    """A freshly initialised instance of ``[model]``'s model (``name`` or ``factory``)."""
    if spec.factory:
        from pipeline.models.factory import build_from_factory

        return build_from_factory(spec.factory, spec.factory_args, num_classes)
    kwargs: dict = {"num_classes": num_classes}
    if takes_image_size(spec.name):  # pass only the arguments the builder takes
        kwargs["image_size"] = spec.image_size
    return get_model(spec.name, **kwargs)


def weights_file(spec: ModelConfig, trained: Path | None, source: str) -> Path:
    """The weights file: ``[model] checkpoint`` if set, else ``trained`` (the run's own
    ``model.pt``, None when the workflow does not train)."""
    if spec.checkpoint:
        return Path(spec.checkpoint).expanduser()
    if trained is not None:
        return trained
    raise UserError(f"{source}: the model has no weights: set [model] weights (for a "
                    "torchvision or timm model) or [model] checkpoint, or enable [train]")


def read_weights(spec: ModelConfig, path: Path, source: str,
                 option: str = "[model] checkpoint") -> Checkpoint:
    """The weights in ``path``, read as ``[model] checkpoint_key`` and ``trust_pickle`` say
    (the run's own files are plain state dicts or training checkpoints)."""
    from pipeline.models.checkpoints import read_checkpoint

    own = option == "[model] checkpoint" and bool(spec.checkpoint)
    return read_checkpoint(path, source, option, key=spec.checkpoint_key if own else "",
                           trust_pickle=spec.trust_pickle)


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


@dataclass(frozen=True)
class ModelSource:
    """Where the analysed model comes from: ``[model]``, the run's own trained weights file
    (None when the workflow does not train), the classes it is sized to, and the workflow file
    that errors name. It pickles, so a dask worker loads the same model."""

    spec: ModelConfig
    trained: Path | None
    num_classes: int
    source: str

    def load(self, device: torch.device) -> nn.Module:
        """The model with its weights loaded, in eval mode on ``device``."""
        return self.load_described(device)[0]

    def load_described(self, device: torch.device) -> tuple[nn.Module, str]:
        """(:meth:`load`, which weights they are, as the run's log and the model card say
        it). The description is printed once per load."""
        return load_described(self.spec, self.trained, self.num_classes, device, self.source)

    def weights_file(self) -> Path | None:
        """The file the weights are read from; None for published weights."""
        from pipeline.models.pretrained import pretrained_weights

        if pretrained_weights(self.spec, self.source) is not None:
            return None
        return weights_file(self.spec, self.trained, self.source)


def load_described(spec: ModelConfig, trained: Path | None, num_classes: int,
                   device: torch.device, source: str) -> tuple[nn.Module, str]:
    """(the model with its weights, in eval mode on ``device``; which weights they are, as the
    run's log and the model card say it). The description is printed once per load."""
    from pipeline.models.pretrained import pretrained_weights
    from pipeline.models.unfilled import unfilled_model

    published = pretrained_weights(spec, source)
    if published is not None:
        model, described = published.load(spec.download), published.description
    else:
        if spec.factory:  # a user's constructor may keep random tensors no load restores
            model = build_model(spec, num_classes)
        else:  # the strict load below replaces every weight: no random draws (unfilled.py)
            model = unfilled_model(lambda: build_model(spec, num_classes))
        path = weights_file(spec, trained, source)
        checkpoint = read_weights(spec, path, source)
        fitted = fit_state_dict(model, checkpoint.state, path, spec.label, num_classes)
        described = checkpoint.where() + (f", {fitted}" if fitted else "")
        if not spec.checkpoint:
            described = f"trained in this run ({described})"
    print(f"[model] {spec.label}, weights: {described}")
    return model.eval().to(device), described
