"""The stage registry: ``@register_stage`` in torchvision's ``register_model`` style.

The order of registration is the dependency order, so ``run all`` is the registry in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import Workflow
    from pipeline.stages.context import StageContext

StageFunction = Callable[["StageContext"], "bool | None"]  # False: incomplete shard


@dataclass(frozen=True)
class Stage:
    """A stage: a function of its config sections, the run's paths and its inputs' outputs."""

    name: str
    func: StageFunction
    inputs: tuple[str, ...]
    sections: tuple[str, ...]
    enabled: Callable[[Workflow], bool]
    doc: str


_STAGES: dict[str, Stage] = {}


def register_stage(
    name: str,
    inputs: tuple[str, ...] = (),
    sections: tuple[str, ...] = (),
    enabled: Callable[[Workflow], bool] = lambda workflow: True,
) -> Callable[[StageFunction], StageFunction]:
    """Register ``func`` as stage ``name`` reading the outputs of ``inputs`` (earlier stages) and
    the config ``sections`` whose values make up its stamp."""

    def wrap(func: StageFunction) -> StageFunction:
        if name in _STAGES:
            raise ValueError(f"a stage named '{name}' is already registered")
        unknown = [stage for stage in inputs if stage not in _STAGES]
        if unknown:
            raise ValueError(f"stage '{name}' reads {unknown}, which are not registered before it")
        doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        _STAGES[name] = Stage(name, func, inputs, sections, enabled, doc)
        return func

    return wrap


def list_stages() -> list[Stage]:
    """Every registered stage, in dependency order."""
    return list(_STAGES.values())


def get_stage(name: str) -> Stage:
    """The stage called ``name``; the caller turns a KeyError into a user message."""
    return _STAGES[name]
