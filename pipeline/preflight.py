"""Checking a workflow before any stage runs, so a mistake costs no finished work.

``run`` (and ``status``) call :func:`check_run` with the stages about to run: it refuses, with
one line, whatever it can find without the heavy work — the model does not build, is too big for
the image size, has no such layer, its weights file is missing, is not a weights file or was
trained for another number of classes, the data folder does not scan — while the run folder is
still exactly as it was. The model is built on PyTorch's ``meta`` device (shapes, no memory, no
initialisation) and weights files are memory-mapped, so checking a VGG costs well under a second.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.config import Workflow
from pipeline.data.roots import analysed_root, train_root
from pipeline.errors import UserError
from pipeline.layout import RunLayout

if TYPE_CHECKING:
    from torch import nn

    from pipeline.interp.layers import LayerInfo

def check_run(workflow: Workflow, layout: RunLayout, stages: Collection[str]) -> None:
    """Refuse (``UserError``) a workflow whose ``stages`` would fail for a reason knowable now."""
    if "prepare" in stages:
        try:
            num_classes = _scan(workflow, layout)
        except PermissionError as error:  # before any stage: the user's folder, not the disk
            raise UserError(f"{error.filename}: cannot be read ({error.strerror}); give this "
                            f"user read access or point [data] root in {workflow.source} "
                            "elsewhere") from None
    elif layout.classes.exists():
        num_classes = len(pd.read_parquet(layout.classes, columns=["label"]))
    else:
        num_classes = 1000  # nothing planned reads the classes
    from pipeline.stages import get_stage

    planned = [get_stage(name) for name in stages]
    if any(stage.reads_images for stage in planned) and "prepare" not in stages:
        root = analysed_root(workflow, layout)
        if not root.is_dir():
            raise UserError(f"{root}: data folder not found (from [data] root in "
                            f"{workflow.source}); point [data] root or --data at your images")
    model = check_model(workflow, num_classes)
    _check_experiments(workflow, layout, model, stages)
    _check_rules(workflow, model, stages)
    if any(stage.loads_weights for stage in planned):
        _check_weights(workflow, layout, model, num_classes, trains="train" in stages)
    if "evolution" in stages:
        _check_snapshots(workflow, layout, num_classes, trains="train" in stages)


def _check_experiments(workflow: Workflow, layout: RunLayout, model: nn.Module,
                       stages: Collection[str]) -> None:
    """``[occlusion] layer`` names an analysed layer, and the images the experiments list are
    in the manifest (when prepare has written it and will not rerun): found now, not after
    hours of activations."""
    from pipeline.models.preprocessing import preprocessing

    if "occlusion" in stages and workflow.occlusion.layer:
        size = preprocessing(workflow).crop
        labels = [layer.label for layer in checked_layers(
            model, size, workflow.activations.layers, workflow.source)]
        if workflow.occlusion.layer not in labels:
            raise UserError(f"{workflow.source}: [occlusion] layer '{workflow.occlusion.layer}' "
                            f"is not an analysed layer; use one of {', '.join(labels)} (set by "
                            "[activations] layers), or leave it empty for the last")
    if "prepare" in stages or not layout.manifest.exists():
        return
    paths = None
    for section in ("occlusion", "invariance"):
        files = workflow.section(section).files
        if section not in stages or not files:
            continue
        if paths is None:
            paths = set(pd.read_parquet(layout.manifest, columns=["path"])["path"])
        missing = [name for name in files if name not in paths]
        if missing:
            raise UserError(f"{workflow.source}: [{section}] files: {missing[0]!r} is not in the "
                            "manifest; list files as the manifest names them (relative to the "
                            "data root), or leave the list empty to sample images")


def _check_rules(workflow: Workflow, model: nn.Module, stages: Collection[str]) -> None:
    """Every projection planned has a rule on the backward path of its layer (see
    pipeline.interp.rules): ``[deconv] methods`` "deconvnet"/"guided" on every analysed layer,
    the deconvnet of the occlusion and evolution experiments on theirs. A SiLU, GELU or
    Hardswish network is refused before activations run for hours, not when a stage gets there."""
    from pipeline.interp.rules import RULES, refusal, unruled_layers
    from pipeline.models.preprocessing import preprocessing

    # (what asks, its method, the label of its one layer or None for all, what to do instead)
    wanted: list[tuple[str, str, str | None, str]] = []
    methods = [method for method in workflow.deconv.methods if method in RULES]
    if "deconv" in stages and methods:
        wanted.append(("[deconv] methods", methods[0], None,
                       'set [deconv] methods = ["gradient"]'))
    if "occlusion" in stages:
        wanted.append(("[occlusion]", "deconvnet", workflow.occlusion.layer,
                       "its projection panel needs one: set [occlusion] images = 0"))
    if "evolution" in stages:
        wanted.append(("[evolution]", "deconvnet", None, "its pages are projections: set "
                       "[train] snapshot_epochs = [] and [evolution] checkpoints = []"))
    if not wanted:
        return
    size = preprocessing(workflow).crop
    layers = checked_layers(model, size, workflow.activations.layers, workflow.source)
    names = [layer.name for layer in layers]
    try:
        marks = unruled_layers(model, (size, size), names)
    except Exception:  # noqa: BLE001 - a builder that needs real tensors: the CPU decides
        marks = unruled_layers(model.to_empty(device="cpu"), (size, size), names)
    for asker, method, label, fix in wanted:
        chosen = layers if label is None else [  # occlusion: its layer, by default the last
            next((layer for layer in layers if layer.label == label), layers[-1])]
        blocked = next((layer for layer in chosen if marks[layer.name] is not None), None)
        if blocked is not None:
            raise UserError(f"{workflow.source}: {asker}: " + refusal(
                blocked.name, method, marks[blocked.name], fix))


def check_model(workflow: Workflow, num_classes: int) -> nn.Module:
    """The workflow's model, built without weights on the meta device, after checking that it
    builds and has the analysed layers at the workflow's input size."""
    from pipeline.models.loading import build_model
    from pipeline.models.preprocessing import preprocessing

    what = (f"{workflow.source}: [model] name '{workflow.model.name}'" if workflow.model.name
            else f"{workflow.source}: [model] factory '{workflow.model.factory}'")
    try:
        model = checked_build(lambda: build_model(workflow, model_classes(workflow, num_classes)),
                              what)
    except UserError as error:
        if str(error).startswith(workflow.source):
            raise
        raise UserError(f"{workflow.source}: [model] {error}") from None
    size = preprocessing(workflow).crop
    checked_layers(model, size, workflow.activations.layers, what)
    return model


def checked_build(build: Callable[[], nn.Module], what: str) -> nn.Module:
    """``build()`` on the meta device (on the CPU if the builder needs real tensors); a
    builder's own refusal (e.g. an image size it cannot take) becomes one line naming ``what``."""
    import torch

    from pipeline.models.factory import FactoryError

    try:
        with torch.device("meta"):
            return build()
    except FactoryError:
        pass  # the user's function may need real tensors: the CPU decides
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - some builders need real tensors; the CPU decides
        pass
    try:
        return build()
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any builder failure is the workflow's
        raise UserError(f"{what}: cannot be built ({_first_line(error)}); check the model's "
                        "name and input size") from None


def checked_layers(model: nn.Module, size: int, names: Sequence[str], what: str,
                   size_option: str = "[model] image_size",
                   allow_empty: bool = False) -> list[LayerInfo]:
    """The analysed layers at ``size`` x ``size`` pixels; an input too small for the network,
    or a network without feature maps (unless ``allow_empty``: `layers` explains it), is
    refused in one line."""
    from pipeline.interp import analysable_layers
    from pipeline.interp.layers import default_notes

    try:
        found = analysable_layers(model, (size, size), names=list(names) or None)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - retry for real before blaming the workflow
        if next(model.parameters(), None) is None or not next(model.parameters()).is_meta:
            raise UserError(f"{what}: cannot run on {size} x {size} inputs "
                            f"({_first_line(error)}); raise {size_option}") from None
        return checked_layers(model.to_empty(device="cpu"), size, names, what, size_option,
                              allow_empty)
    if not found and not allow_empty:
        why = "; ".join(default_notes(model, (size, size))) or "it has no conv block"
        raise UserError(f"{what}: has no default layers to analyse ({why}); name its layers "
                        "in [activations] layers (`python -m pipeline layers --all` lists "
                        "them)")
    return found


def _scan(workflow: Workflow, layout: RunLayout) -> int:
    """Scan the data folders as prepare will; the number of the model's classes."""
    from pipeline.data.classes import class_table

    if workflow.data.source == "synthetic":
        from pipeline.data.synthetic import CLASS_NAMES, check_settings

        spec = workflow.data.synthetic
        check_settings(spec.image_size, spec.train_per_class, spec.val_per_class, spec.seed)
        classes, _ = class_table(workflow, list(CLASS_NAMES), layout.synthetic_data)
        return len(classes)
    from pipeline.data.manifest import scan_workflow_data

    scanned = scan_workflow_data(workflow, analysed_root(workflow, layout),
                                 train_root(workflow, layout))
    return len(scanned.classes)


def model_classes(workflow: Workflow, num_classes: int) -> int:
    """The model's number of classes: torchvision weights bring their own; otherwise the
    data's count ``num_classes``."""
    from pipeline.models.pretrained import pretrained_weights

    published = pretrained_weights(workflow)
    return published.num_classes() if published is not None else num_classes


def _check_weights(workflow: Workflow, layout: RunLayout, model: nn.Module, num_classes: int,
                   trains: bool) -> None:
    """The weights exist, are a weights file, and (for a checkpoint) fit the model."""
    from pipeline.models.loading import checkpoint_path, fit_state_dict, read_weights
    from pipeline.models.pretrained import pretrained_weights

    spec = workflow.model
    published = pretrained_weights(workflow)
    if published is not None:
        path = published.check(spec.download)
        if path is not None:
            read_weights(workflow, path, "[model] weights")
        return
    if workflow.train.enabled and not spec.checkpoint and trains:
        return  # the train stage writes the weights
    path = checkpoint_path(workflow, layout)
    fit_state_dict(model, read_weights(workflow, path).state, path, spec.label, num_classes,
                   assign=next(model.parameters()).is_meta)


def _check_snapshots(workflow: Workflow, layout: RunLayout, num_classes: int, trains: bool
                     ) -> None:
    """Every file the evolution stage compares exists, is a weights file and fits the model:
    the files of ``[evolution] checkpoints``, or the kept snapshots unless training writes them
    in this run."""
    from pipeline.experiments.snapshots import CHECKPOINTS, read_snapshot, snapshot_files
    from pipeline.models.loading import build_model

    if not workflow.evolution.checkpoints and trains:
        return
    classes = model_classes(workflow, num_classes)
    # a model of its own: loading with assign=True swaps the weights of the one it is given
    model = checked_build(lambda: build_model(workflow, classes), f"[model] "
                          f"'{workflow.model.label}'")
    meta = next(model.parameters()).is_meta
    for snapshot in snapshot_files(workflow, layout):
        if snapshot.option == CHECKPOINTS and not snapshot.path.is_file():
            raise UserError(f"{workflow.source}: {CHECKPOINTS}: {snapshot.path} not found; "
                            "list existing state-dict files (paths relative to the current "
                            "folder or absolute)")
        read_snapshot(workflow, snapshot, model, classes, assign=meta)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
