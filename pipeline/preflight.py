"""Checking a workflow before any stage runs, so a mistake costs no finished work.

``run`` (and ``status``) call :func:`check_run` with the stages about to run: it refuses, with
one line, whatever it can find without the heavy work — the model does not build, is too big for
the image size, has no such layer, its weights file is missing, is not a weights file or was
trained for another number of classes, the data folder does not scan — while the run folder is
still exactly as it was. The model is built on PyTorch's ``meta`` device (shapes, no memory, no
initialisation) and weights files are memory-mapped, so checking a VGG costs well under a second.

Every option's value is checked whether or not a stage about to run uses it, so a finished run
does not hide a mistake until a later change makes its stage run: every ``device`` is spelled as
a device, and the layers, projection methods and experiment options of every enabled stage are
checked. What needs this machine or files a stage reads (whether the device is here, the data
folder, the weights files) is checked for the stages about to run only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.config import Workflow
from pipeline.errors import UserError
from pipeline.layout import RunLayout
from pipeline.run_inputs import analysed_root, preprocessing, scan_settings, train_root

if TYPE_CHECKING:
    from torch import nn

    from pipeline.interp.layers import LayerInfo

#: Stages whose ``device`` may be resolved on another machine: on a dask cluster the
#: activations run on the workers' devices, which this process cannot see (the stage, or each
#: worker, refuses a device it lacks).
_DEVICE_ELSEWHERE = frozenset({"activations"})


def check_run(workflow: Workflow, layout: RunLayout, stages: Collection[str],
              on_cluster: bool = False) -> None:
    """Refuse (``UserError``) a workflow whose ``stages`` would fail for a reason knowable now,
    or whose options name what does not exist, whether or not ``stages`` use them
    (``on_cluster``: the activations run on a dask cluster's workers)."""
    from pipeline.catalog import IMAGES, WEIGHTS_FILE
    from pipeline.stages import get_stage, list_stages

    _check_devices(workflow, stages, on_cluster)
    data = _known_data(workflow, layout, prepares="prepare" in stages)
    planned = [get_stage(name) for name in stages]
    if any(IMAGES in stage.reads for stage in planned) and "prepare" not in stages:
        root = analysed_root(workflow, layout)
        if not root.is_dir():
            raise UserError(f"{root}: data folder not found (from [data] root in "
                            f"{workflow.source}); point [data] root or --data at your images")
    model = check_model(workflow, data.num_classes)
    enabled = {stage.name for stage in list_stages() if stage.enabled(workflow)} | set(stages)
    _check_experiments(workflow, model, enabled, data)
    _check_rules(workflow, model, enabled)
    # Files a planned stage reads; a finished stage's are part of its key (it reruns, and is
    # checked, when they change), and a run that is done may have moved its data away.
    if any(WEIGHTS_FILE in stage.reads for stage in planned):
        _check_weights(workflow, layout, model, data.num_classes, trains="train" in stages)
    if "evolution" in stages:
        _check_snapshots(workflow, layout, data.num_classes, trains="train" in stages)


def _check_devices(workflow: Workflow, stages: Collection[str], on_cluster: bool) -> None:
    """Every section's ``device`` is 'auto' or a torch device; that of a stage about to run on
    this machine is also one it has (a finished stage's 'cuda' is no reason to refuse a
    laptop that runs nothing, nor a cluster's workers' one a client without it)."""
    from pipeline.device import check_available, parse_device

    for spec in dataclasses.fields(workflow):
        section = getattr(workflow, spec.name)
        device = getattr(section, "device", None)
        if not dataclasses.is_dataclass(section) or not isinstance(device, str):
            continue
        # rank measures a bfloat16 store's top candidates again on [activations]' device, here
        runs_here = (spec.name in stages and not (on_cluster and spec.name in _DEVICE_ELSEWHERE)
                     or spec.name == "activations" and "rank" in stages
                     and workflow.activations.bf16)
        try:
            parse_device(device)
            if runs_here:
                check_available(device)
        except UserError as error:
            raise UserError(f"{workflow.source}: [{spec.name}] {error}") from None


@dataclass(frozen=True)
class _KnownData:
    """What is known of the data before any stage runs: the model's class names and the
    analysed images' manifest paths, each None until prepare has found them."""

    class_names: list[str] | None
    scanned: pd.DataFrame | None = None  # the manifest scanned now, for prepare
    manifest: Path | None = None  # the manifest prepare wrote (and will not rewrite)

    @property
    def num_classes(self) -> int:
        """The number of classes, 1000 when unknown (nothing planned reads them)."""
        return len(self.class_names) if self.class_names is not None else 1000

    def image_paths(self) -> set[str] | None:
        """The manifest's image paths (relative to the data root), None when not yet known."""
        if self.scanned is not None:
            return set(self.scanned["path"])
        if self.manifest is not None:
            return set(pd.read_parquet(self.manifest, columns=["path"])["path"])
        return None


def _known_data(workflow: Workflow, layout: RunLayout, prepares: bool) -> _KnownData:
    """Scan the data folders as prepare will (when it is about to run), or read what it wrote."""
    if prepares:
        try:
            classes, manifest = _scan(workflow, layout)
        except PermissionError as error:  # before any stage: the user's folder, not the disk
            raise UserError(f"{error.filename}: cannot be read ({error.strerror}); give this "
                            f"user read access or point [data] root in {workflow.source} "
                            "elsewhere") from None
        return _KnownData([str(name) for name in classes["name"]], scanned=manifest)
    names = None
    if layout.classes.exists():
        names = [str(name) for name in pd.read_parquet(layout.classes, columns=["name"])["name"]]
    return _KnownData(names, manifest=layout.manifest if layout.manifest.exists() else None)


def _check_experiments(workflow: Workflow, model: nn.Module, enabled: Collection[str],
                       data: _KnownData) -> None:
    """The experiments' options of every enabled stage name what exists: ``[occlusion] layer``
    an analysed layer and ``size`` a square within the input; ``[invariance] exclude_*``
    classes of the data and the ``files`` images of the manifest, once ``data`` knows them
    (the synthetic images are known only after prepare has generated them)."""
    from pipeline.experiments.invariance_sampling import excluded_classes
    from pipeline.experiments.occlusion_run import square_grid

    size = preprocessing(workflow).input_size
    if "occlusion" in enabled:
        spec = workflow.occlusion
        if spec.layer:
            labels = [layer.label for layer in checked_layers(
                model, size, workflow.activations.modules, workflow.source)]
            if spec.layer not in labels:
                raise UserError(f"{workflow.source}: [occlusion] layer '{spec.layer}' is not an "
                                f"analysed layer; use one of {', '.join(labels)} (set by "
                                "[activations] modules), or leave it empty for the last")
        try:
            square_grid(size, spec.size, spec.stride)
        except UserError as error:
            raise UserError(f"{workflow.source}: {error}") from None
    if "invariance" in enabled and data.class_names is not None:
        invariance = workflow.invariance
        try:
            excluded_classes(data.class_names, {"translation": invariance.exclude_translation,
                                                "scale": invariance.exclude_scale,
                                                "rotation": invariance.exclude_rotation})
        except UserError as error:
            raise UserError(f"{workflow.source}: {error}") from None
    listed = [section for section in ("occlusion", "invariance")
              if section in enabled and workflow.section(section).files]
    paths = data.image_paths() if listed else None
    if paths is None:
        return
    for section in listed:
        missing = [name for name in workflow.section(section).files if name not in paths]
        if missing:
            raise UserError(f"{workflow.source}: [{section}] files: {missing[0]!r} is not in the "
                            "manifest; list files as the manifest names them (relative to the "
                            "data root), or leave the list empty to sample images")


def _check_rules(workflow: Workflow, model: nn.Module, enabled: Collection[str]) -> None:
    """Every projection of an enabled stage has a rule on the backward path of its layer (see
    pipeline.interp.rules): ``[deconv] methods`` "deconvnet"/"guided" on every analysed layer,
    the deconvnet of the occlusion and evolution experiments on theirs. A SiLU, GELU or
    Hardswish network is refused before activations run for hours, not when a stage gets there."""
    from pipeline.interp.rules import RULES, refusal, unruled_layers

    # (what asks, its method, the label of its one layer or None for all, what to do instead)
    wanted: list[tuple[str, str, str | None, str]] = []
    methods = [method for method in workflow.deconv.methods if method in RULES]
    if "deconv" in enabled and methods:
        wanted.append(("[deconv] methods", methods[0], None,
                       'set [deconv] methods = ["gradient"]'))
    if "occlusion" in enabled:
        wanted.append(("[occlusion]", "deconvnet", workflow.occlusion.layer,
                       "its projection panel needs one: set [occlusion] images = 0"))
    if "evolution" in enabled:
        wanted.append(("[evolution]", "deconvnet", None, "its pages are projections: set "
                       "[train] snapshot_epochs = [] and [evolution] checkpoints = []"))
    if not wanted:
        return
    size = preprocessing(workflow).input_size
    layers = checked_layers(model, size, workflow.activations.modules, workflow.source)
    names = [layer.name for layer in layers]
    try:
        marks = unruled_layers(model, (size, size), names)
    except Exception:  # noqa: BLE001 - a builder that needs real tensors: the CPU decides
        marks = unruled_layers(model.to_empty(device="cpu"), (size, size), names)
    for asker, method, label, fix in wanted:
        chosen = layers if label is None else [  # occlusion: its layer, by default the last
            next((layer for layer in layers if layer.label == label), layers[-1])]
        blocked = next(((layer.name, mark) for layer in chosen
                        if (mark := marks[layer.name]) is not None), None)
        if blocked is not None:
            raise UserError(f"{workflow.source}: {asker}: " + refusal(
                blocked[0], method, blocked[1], fix))


def check_model(workflow: Workflow, num_classes: int) -> nn.Module:
    """The workflow's model, built without weights on the meta device, after checking that it
    builds and has the analysed layers at the workflow's input size."""
    from pipeline.models.loading import build_model

    what = (f"{workflow.source}: [model] name '{workflow.model.name}'" if workflow.model.name
            else f"{workflow.source}: [model] factory '{workflow.model.factory}'")
    try:
        classes = model_classes(workflow, num_classes)
        model = checked_build(lambda: build_model(workflow.model, classes), what)
    except UserError as error:
        if str(error).startswith(workflow.source):
            raise
        raise UserError(f"{workflow.source}: [model] {error}") from None
    size = preprocessing(workflow).input_size
    checked_layers(model, size, workflow.activations.modules, what)
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
                        "in [activations] modules (`python -m pipeline layers --all` lists "
                        "them)")
    return found


def _scan(workflow: Workflow, layout: RunLayout) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Scan the data folders as prepare will: (the model's class table, the manifest of the
    analysed images, None for the synthetic images prepare has yet to generate)."""
    settings = scan_settings(workflow)
    if workflow.data.source == "synthetic":
        from pipeline.data.classes import class_table
        from pipeline.data.synthetic import CLASS_NAMES, check_settings

        spec = workflow.data.synthetic
        check_settings(spec.image_size, spec.train_per_class, spec.val_per_class, spec.seed)
        classes, _ = class_table(list(CLASS_NAMES), layout.synthetic_data, settings.categories,
                                 settings.trains, workflow.source)
        return classes, None
    from pipeline.data.prepare_run import scan_workflow_data

    scanned = scan_workflow_data(settings, analysed_root(workflow, layout),
                                 train_root(workflow, layout))
    return scanned.classes, scanned.manifest


def model_classes(workflow: Any, num_classes: int) -> int:
    """The model's number of classes: torchvision weights bring their own; otherwise the
    data's count ``num_classes``. ``workflow``: a Workflow or a stage's view of it."""
    from pipeline.models.pretrained import pretrained_weights

    published = pretrained_weights(workflow.model, workflow.source)
    return published.num_classes() if published is not None else num_classes


def _check_weights(workflow: Workflow, layout: RunLayout, model: nn.Module, num_classes: int,
                   trains: bool) -> None:
    """The weights exist, are a weights file, and (for a checkpoint) fit the model."""
    from pipeline.models.loading import fit_state_dict, read_weights, weights_file
    from pipeline.models.pretrained import pretrained_weights

    spec, source = workflow.model, workflow.source
    published = pretrained_weights(spec, source)
    if published is not None:
        path = published.check(spec.download)
        if path is not None:
            read_weights(spec, path, source, "[model] weights")
        return
    if workflow.train.enabled and not spec.checkpoint and trains:
        return  # the train stage writes the weights
    path = weights_file(spec, layout.model if workflow.train.enabled else None, source)
    fit_state_dict(model, read_weights(spec, path, source).state, path, spec.label, num_classes,
                   assign=next(model.parameters()).is_meta)


def _check_snapshots(workflow: Workflow, layout: RunLayout, num_classes: int, trains: bool
                     ) -> None:
    """Every file the evolution stage compares exists, is a weights file and fits the model:
    the files of ``[evolution] checkpoints``, or the kept snapshots unless training writes them
    in this run."""
    from pipeline.experiments.snapshots import CHECKPOINTS, read_snapshot
    from pipeline.models.loading import build_model
    from pipeline.run_inputs import snapshots

    if not workflow.evolution.checkpoints and trains:
        return
    classes = model_classes(workflow, num_classes)
    # a model of its own: loading with assign=True swaps the weights of the one it is given
    model = checked_build(lambda: build_model(workflow.model, classes), f"[model] "
                          f"'{workflow.model.label}'")
    meta = next(model.parameters()).is_meta
    for snapshot in snapshots(workflow, layout):
        if snapshot.option == CHECKPOINTS and not snapshot.path.is_file():
            raise UserError(f"{workflow.source}: {CHECKPOINTS}: {snapshot.path} not found; "
                            "list existing state-dict files (paths relative to the current "
                            "folder or absolute)")
        read_snapshot(workflow.model, workflow.source, snapshot, model, classes, assign=meta)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
