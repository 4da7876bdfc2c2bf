"""The stage registry: ``@register_stage`` in torchvision's ``register_model`` style.

The order of registration is the dependency order, so ``run all`` is the registry in order.
Each stage declares its contract as data the runner can inspect, in kedro's ``node(func,
inputs, outputs)`` manner: the catalog's artifacts it reads and writes
(:mod:`pipeline.catalog`), the config it reads (``config``, which changes its results, and
``unkeyed``, which does not), and its revision (see ``pipeline.stamps``). Its input stages are
those that write what it reads; what it reads from outside the run (weights, model file,
images) goes into its key. The runner holds a stage to its declarations: it can open only the
artifacts it declared and read only the config it declared (``pipeline.stages.context``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.catalog import Artifact, External
from pipeline.layout import RunLayout

if TYPE_CHECKING:
    from pipeline.config import Workflow
    from pipeline.stages.context import StageContext

StageFunction = Callable[["StageContext"], "bool | None"]  # False: incomplete shard


@dataclass(frozen=True)
class Stage:
    """A stage: a function of its config, of what it reads, writing what it declares."""

    name: str
    func: StageFunction
    reads: tuple[Artifact | External, ...]
    writes: tuple[Artifact, ...]
    config: tuple[str, ...]
    unkeyed: tuple[str, ...]
    enabled: Callable[[Any], bool]
    doc: str
    inputs: tuple[str, ...]  # the stages that write what it reads, in registry order
    revision: int = 1

    @property
    def external(self) -> tuple[External, ...]:
        """What it reads from outside the run folder (digested into its key)."""
        return tuple(item for item in self.reads if isinstance(item, External))

    @property
    def sharded(self) -> bool:
        """It fills an artifact in shares (``--shard``, dask tasks)."""
        return any(item.sharded for item in self.writes)

    def output_paths(self, workflow: Workflow, layout: RunLayout,
                     digested_only: bool = True) -> tuple[Path, ...]:
        """The paths this stage writes for ``workflow``: by default those whose content its
        downstream stages depend on (its stamp's digest), with ``digested_only=False`` every
        path it may stage."""
        return tuple(item.path(layout) for item in self.writes
                     if item.written(workflow) and (item.digested or not digested_only))

    @property
    def declared_config(self) -> tuple[str, ...]:
        """Every config section or option the stage may read: ``config`` and ``unkeyed``."""
        return self.config + self.unkeyed


_STAGES: dict[str, Stage] = {}


def register_stage(
    name: str,
    reads: tuple[Artifact | External, ...] = (),
    writes: tuple[Artifact, ...] = (),
    config: tuple[str, ...] = (),
    unkeyed: tuple[str, ...] = (),
    enabled: Callable[[Any], bool] = lambda workflow: True,
    revision: int = 1,
) -> Callable[[StageFunction], StageFunction]:
    """Register ``func`` as stage ``name``.

    ``reads``: the artifacts it opens (each written by a stage registered before it) and what
    it reads from outside the run; ``writes``: the artifacts it writes, the only ones it may
    stage; ``config``: the config sections or single options ('model.name') that change its
    results; ``unkeyed``: the options it also reads that do not (execution-only options, and
    those whose effect reaches it through what it reads); ``revision`` is bumped by a release
    that changes what the stage writes.
    """

    def wrap(func: StageFunction) -> StageFunction:
        if name in _STAGES:
            raise ValueError(f"a stage named '{name}' is already registered")
        inputs = []
        for item in reads:
            if isinstance(item, Artifact):
                try:
                    writer = stage_writing(item).name
                except KeyError:
                    raise ValueError(f"stage '{name}' reads {item.name}, which no stage "
                                     "registered before it writes") from None
                if writer not in inputs:
                    inputs.append(writer)
        order = list(_STAGES)
        doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        _STAGES[name] = Stage(name, func, tuple(reads), tuple(writes), tuple(config),
                              tuple(unkeyed), enabled, doc,
                              tuple(sorted(inputs, key=order.index)), revision)
        return func

    return wrap


def list_stages() -> list[Stage]:
    """Every registered stage, in dependency order."""
    return list(_STAGES.values())


def get_stage(name: str) -> Stage:
    """The stage called ``name``; the caller turns a KeyError into a user message."""
    return _STAGES[name]


def stage_writing(item: Artifact) -> Stage:
    """The stage that writes ``item``."""
    for stage in _STAGES.values():
        if item in stage.writes:
            return stage
    raise KeyError(f"no stage writes {item.name}")


def readers_of(item: Artifact) -> list[Stage]:
    """The stages that read ``item``."""
    return [stage for stage in _STAGES.values() if item in stage.reads]
