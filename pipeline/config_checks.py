"""Ranges and combinations of workflow options, checked when a workflow file is loaded.

A value of the right type can still be meaningless (a batch of 0 images, a snapshot after the
last epoch) or contradict another option; each check here turns such a value into one
:class:`ConfigError` line naming the file and the key, before any stage starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import ModelConfig, TrainConfig, Workflow

#: The projection rules of the engine, in the order the atlas offers them.
PROJECTION_METHODS = ("deconvnet", "guided", "gradient")


#: How ``[model] factory`` is written, for the errors that refuse another form.
FACTORY_FORMAT = ("expected 'file.py:function' or 'package.module:function', e.g. "
                  "'my_models.py:build'")


def factory_parts(factory: str) -> tuple[str, str] | None:
    """(the file or module, the function) of ``"file.py:function"`` or
    ``"package.module:function"``; None when ``factory`` is neither."""
    where, colon, function = factory.rpartition(":")
    if not colon or not where or not function.isidentifier():
        return None
    return where, function


def factory_is_file(where: str) -> bool:
    """Whether a factory's first part is a file path rather than a dotted module name."""
    return where.endswith(".py") or "/" in where or "\\" in where


def validate(workflow: Workflow, path: Path) -> Workflow:
    """``workflow`` if its values make sense together; else the first problem, as a
    ConfigError (ranges and combinations a stage would otherwise trip over after hours of work)."""
    _validate_name(workflow.name, path)
    model = workflow.model
    if bool(model.name) == bool(model.factory):
        raise ConfigError(f"{path}: [model] needs exactly one of name (a registered, torchvision "
                          "or 'timm/...' model) and factory ('file.py:function'), got "
                          + ("both" if model.name else "neither"))
    if model.factory and factory_parts(model.factory) is None:
        raise ConfigError(f"{path}: [model] factory '{model.factory}': {FACTORY_FORMAT}")
    if model.checkpoint_key and not model.checkpoint:
        raise ConfigError(f"{path}: [model] checkpoint_key names an entry of [model] "
                          "checkpoint, which is not set; set it, or remove checkpoint_key")
    if model.factory and model.weights:
        raise ConfigError(f"{path}: [model] weights is for torchvision and timm models, and this "
                          "one comes from [model] factory; give its weights as [model] "
                          "checkpoint")
    if workflow.data.source != "synthetic" and not workflow.data.root:
        raise ConfigError(f"{path}: [data] root is required for source "
                          f"'{workflow.data.source}'; set it or pass --data PATH")
    data, model, train = workflow.data, workflow.model, workflow.train
    if train.enabled and data.source != "synthetic" and not data.train_root:
        raise ConfigError(f"{path}: [data] train_root is required when [train] enabled = true")
    for key, value, low in (("rank.top_k", workflow.rank.top_k, 1),
                            ("activations.batch_size", workflow.activations.batch_size, 1),
                            ("activations.chunk_size", workflow.activations.chunk_size, 1),
                            ("activations.num_workers", workflow.activations.num_workers, 0),
                            ("activations.prefetch", workflow.activations.prefetch, 1),
                            ("deconv.batch_size", workflow.deconv.batch_size, 1),
                            ("deconv.num_workers", workflow.deconv.num_workers, -1),
                            ("model.image_size", model.image_size, 1),
                            ("model.resize_size", model.resize_size, 0),
                            ("train.epochs", train.epochs, 1),
                            ("train.batch_size", train.batch_size, 1),
                            ("train.plateau_patience", train.plateau_patience, 1),
                            ("train.num_workers", train.num_workers, 0),
                            ("featurevis.units", workflow.featurevis.units, 0),
                            ("featurevis.steps", workflow.featurevis.steps, 1),
                            ("featurevis.batch_size", workflow.featurevis.batch_size, 1),
                            ("occlusion.images", workflow.occlusion.images, 0),
                            ("occlusion.size", workflow.occlusion.size, 0),
                            ("occlusion.stride", workflow.occlusion.stride, 0),
                            ("occlusion.batch_size", workflow.occlusion.batch_size, 1),
                            ("evolution.images", workflow.evolution.images, 0),
                            ("evolution.batch_size", workflow.evolution.batch_size, 1),
                            ("invariance.images", workflow.invariance.images, 0),
                            ("invariance.batch_size", workflow.invariance.batch_size, 1),
                            ("sanity.units", workflow.sanity.units, 1),
                            ("sanity.images", workflow.sanity.images, 1),
                            ("sanity.batch_size", workflow.sanity.batch_size, 1),
                            ("dask.shards", workflow.dask.shards, 0),
                            ("render.workers", workflow.render.workers, 0)):
        if value < low:
            raise ConfigError(f"{path}: {key} must be at least {low}, got {value}")
    if 0 < model.resize_size < model.image_size:
        raise ConfigError(f"{path}: model.resize_size ({model.resize_size}) is smaller than "
                          f"model.image_size ({model.image_size}), so the crop would be padding; "
                          "use 0 or a size of at least image_size")
    _validate_methods(workflow.deconv.methods, path)
    if not workflow.featurevis.lr > 0:
        raise ConfigError(f"{path}: featurevis.lr must be above 0, got {workflow.featurevis.lr}")
    if not train.lr > 0 or train.weight_decay < 0 or not 0 <= train.momentum < 1:
        raise ConfigError(f"{path}: [train] needs lr > 0, weight_decay >= 0 and 0 <= momentum "
                          f"< 1, got lr {train.lr}, weight_decay {train.weight_decay}, momentum "
                          f"{train.momentum}")
    if train.filter_radius < 0 or train.first_init_scale <= 0:
        raise ConfigError(f"{path}: train.filter_radius must be >= 0 and "
                          f"train.first_init_scale > 0")
    if train.init_std < 0:
        raise ConfigError(f"{path}: train.init_std must be >= 0, got {train.init_std}")
    _validate_snapshots(train, path)
    listed = workflow.evolution.checkpoints
    if len(set(listed)) != len(listed):
        raise ConfigError(f"{path}: evolution.checkpoints lists a file twice: {list(listed)}")
    if workflow.occlusion.size > model.image_size:
        raise ConfigError(f"{path}: occlusion.size ({workflow.occlusion.size}) is larger than "
                          f"the input ({model.image_size} px); use 0 or a smaller square")
    _validate_normalisation(model, path)
    return workflow


def _validate_snapshots(train: TrainConfig, path: Path) -> None:
    epochs = train.snapshot_epochs
    if epochs and not train.enabled:
        raise ConfigError(f"{path}: train.snapshot_epochs needs [train] enabled = true (to "
                          "compare checkpoints you already have, list them in [evolution] "
                          "checkpoints)")
    wrong = [epoch for epoch in epochs if not 1 <= epoch <= train.epochs]
    if wrong:
        raise ConfigError(f"{path}: train.snapshot_epochs {wrong} are outside 1..{train.epochs} "
                          "(train.epochs)")
    if len(set(epochs)) != len(epochs) or list(epochs) != sorted(epochs):
        raise ConfigError(f"{path}: train.snapshot_epochs must be increasing without repeats, "
                          f"got {list(epochs)}")


def _validate_name(name: str, path: Path) -> None:
    """The run's folder name: ``runs/<name>`` and ``reports/<name>`` must stay inside them."""
    if name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise ConfigError(f"{path}: name {name!r} must be a plain folder name (no '/' or '\\', "
                          "not '.' or '..'): it names runs/<name> and reports/<name>")


def _validate_normalisation(model: ModelConfig, path: Path) -> None:
    if not model.mean or len(model.mean) != len(model.std):
        raise ConfigError(f"{path}: model.mean and model.std need one value per input channel "
                          f"of the model (R, G, B: 3), got {len(model.mean)} and "
                          f"{len(model.std)}")
    if not all(math.isfinite(v) for v in model.mean) or not all(
            math.isfinite(v) and v > 0 for v in model.std):
        raise ConfigError(f"{path}: model.std needs values > 0 and model.mean finite values "
                          f"(images are divided by std), got mean {list(model.mean)}, std "
                          f"{list(model.std)}")


def _validate_methods(methods: tuple[str, ...], path: Path) -> None:
    if not methods:
        raise ConfigError(f"{path}: deconv.methods is empty; list at least one of "
                          f"{list(PROJECTION_METHODS)}")
    for method in methods:
        if method not in PROJECTION_METHODS:
            raise ConfigError(f"{path}: deconv.methods: expected each of "
                              f"{list(PROJECTION_METHODS)}, got {method!r}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"{path}: deconv.methods lists a method twice: {list(methods)}")
