"""The stage registry: ``@register_stage`` in torchvision's ``register_model`` style.

The order of registration is the dependency order, so ``run all`` is the registry in order.
Each stage declares its contract as data the runner can inspect, in kedro's ``node(func, inputs,
outputs)`` manner: its input stages, the config it reads (``keys``, which change its results,
and ``reads``, which do not), the ``RunLayout`` paths it writes, whether it loads the model's
weights, and its revision (see ``pipeline.stamps``). The runner holds a stage to it: a stage can
only stage the outputs it declared and only read the config it declared
(``pipeline.stages.context``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.layout import RunLayout

if TYPE_CHECKING:
    from pipeline.config import Workflow
    from pipeline.stages.context import StageContext

StageFunction = Callable[["StageContext"], "bool | None"]  # False: incomplete shard


@dataclass(frozen=True)
class Output:
    """One path a stage writes: a ``RunLayout`` property, by name.

    ``digested``: part of the stage's content digest, so its downstream stages depend on its
    bytes (a folder written only as a cache, like the demo's generated images, is not: its
    settings file stands for it). ``when``: a config option ('section.option') whose value being
    empty means the stage does not write this path.
    """

    path: str
    digested: bool = True
    when: str = ""

    def resolve(self, layout: RunLayout) -> Path:
        return getattr(layout, self.path)

    def written(self, workflow: Workflow) -> bool:
        if not self.when:
            return True
        section, _, name = self.when.partition(".")
        return bool(getattr(workflow.section(section), name))


def _outputs(declared: tuple[Output | str, ...]) -> tuple[Output, ...]:
    outputs = tuple(Output(item) if isinstance(item, str) else item for item in declared)
    for output in outputs:
        if not isinstance(getattr(RunLayout, output.path, None), property):
            raise ValueError(f"output '{output.path}' is not a path of RunLayout")
    return outputs


@dataclass(frozen=True)
class Stage:
    """A stage: a function of its config keys, the run's paths and its inputs' outputs."""

    name: str
    func: StageFunction
    inputs: tuple[str, ...]
    keys: tuple[str, ...]
    outputs: tuple[Output, ...]
    enabled: Callable[[Workflow], bool]
    doc: str
    revision: int = 1
    loads_weights: bool = False
    lists_images: bool = False
    reads_images: bool = False
    reads_checkpoints: bool = False
    reads: tuple[str, ...] = ()

    def output_paths(self, workflow: Workflow, layout: RunLayout,
                     digested_only: bool = True) -> tuple[Path, ...]:
        """The paths this stage writes for ``workflow``: by default those whose content its
        downstream stages depend on (its stamp's digest), with ``digested_only=False`` every
        path it may stage."""
        return tuple(output.resolve(layout) for output in self.outputs
                     if output.written(workflow) and (output.digested or not digested_only))

    def writes(self, path: str) -> bool:
        """Whether ``path`` (a ``RunLayout`` property name) is among this stage's outputs."""
        return any(output.path == path for output in self.outputs)

    @property
    def config(self) -> tuple[str, ...]:
        """Every config section or option the stage may read: ``keys`` and ``reads``."""
        return self.keys + self.reads


_STAGES: dict[str, Stage] = {}


def register_stage(
    name: str,
    inputs: tuple[str, ...] = (),
    keys: tuple[str, ...] = (),
    outputs: tuple[Output | str, ...] = (),
    enabled: Callable[[Workflow], bool] = lambda workflow: True,
    revision: int = 1,
    loads_weights: bool = False,
    lists_images: bool = False,
    reads_images: bool = False,
    reads_checkpoints: bool = False,
    reads: tuple[str, ...] = (),
) -> Callable[[StageFunction], StageFunction]:
    """Register ``func`` as stage ``name``.

    It reads the outputs of ``inputs`` (earlier stages); ``keys`` are the config sections or
    single options ('model.name') that change its results; ``reads`` the options it also reads
    that do not (execution-only options, and those whose effect reaches it through its inputs'
    outputs); ``outputs`` names the ``RunLayout`` paths it writes (a name, or an
    :class:`Output`), the only ones it may stage; ``revision`` is bumped by a release that
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
        _STAGES[name] = Stage(name, func, inputs, keys, _outputs(outputs), enabled, doc,
                              revision, loads_weights, lists_images, reads_images,
                              reads_checkpoints, reads)
        return func

    return wrap


def list_stages() -> list[Stage]:
    """Every registered stage, in dependency order."""
    return list(_STAGES.values())


def get_stage(name: str) -> Stage:
    """The stage called ``name``; the caller turns a KeyError into a user message."""
    return _STAGES[name]


def stage_writing(path: str) -> Stage:
    """The stage that writes ``path`` (a ``RunLayout`` property name, e.g. 'topk')."""
    for stage in _STAGES.values():
        if stage.writes(path):
            return stage
    raise KeyError(f"no stage declares the output '{path}'")
