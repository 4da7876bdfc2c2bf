"""The stage registry: ``@register_stage`` in torchvision's ``register_model`` style.

The order of registration is the dependency order, so ``run all`` is the registry in order.
Each stage declares what decides its outputs (see ``pipeline.stamps``): its input stages, the
config keys that change its results, whether it loads the model's weights, its outputs and its
revision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import Workflow
    from pipeline.layout import RunLayout
    from pipeline.stages.context import StageContext

StageFunction = Callable[["StageContext"], "bool | None"]  # False: incomplete shard
Outputs = Callable[["Workflow", "RunLayout"], "tuple[Path, ...]"]


@dataclass(frozen=True)
class Stage:
    """A stage: a function of its config keys, the run's paths and its inputs' outputs."""

    name: str
    func: StageFunction
    inputs: tuple[str, ...]
    keys: tuple[str, ...]
    outputs: Outputs
    enabled: Callable[[Workflow], bool]
    doc: str
    revision: int = 1
    loads_weights: bool = False
    lists_images: bool = False
    reads_images: bool = False
    reads_checkpoints: bool = False


_STAGES: dict[str, Stage] = {}


def register_stage(
    name: str,
    inputs: tuple[str, ...] = (),
    keys: tuple[str, ...] = (),
    outputs: Outputs = lambda workflow, layout: (),
    enabled: Callable[[Workflow], bool] = lambda workflow: True,
    revision: int = 1,
    loads_weights: bool = False,
    lists_images: bool = False,
    reads_images: bool = False,
    reads_checkpoints: bool = False,
) -> Callable[[StageFunction], StageFunction]:
    """Register ``func`` as stage ``name``.

    It reads the outputs of ``inputs`` (earlier stages); ``keys`` are the config sections or
    single options ('model.name') that change its results; ``outputs`` lists the files and
    folders whose content downstream stages depend on; ``revision`` is bumped by a release that
    changes what the stage writes; ``loads_weights``: it loads ``[model] checkpoint``, so that
    file's content is part of its key; ``lists_images``: it lists the image folders, so their
    listing is part of its key; ``reads_images``: it reads the manifest's image files, so their
    sizes and times are; ``reads_checkpoints``: it loads ``[evolution] checkpoints``, so
    their content is part of its key.
    """

    def wrap(func: StageFunction) -> StageFunction:
        if name in _STAGES:
            raise ValueError(f"a stage named '{name}' is already registered")
        unknown = [stage for stage in inputs if stage not in _STAGES]
        if unknown:
            raise ValueError(f"stage '{name}' reads {unknown}, which are not registered before it")
        doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        _STAGES[name] = Stage(name, func, inputs, keys, outputs, enabled, doc, revision,
                              loads_weights, lists_images, reads_images, reads_checkpoints)
        return func

    return wrap


def list_stages() -> list[Stage]:
    """Every registered stage, in dependency order."""
    return list(_STAGES.values())


def get_stage(name: str) -> Stage:
    """The stage called ``name``; the caller turns a KeyError into a user message."""
    return _STAGES[name]
