"""What a stage receives from the runner: its workflow, what it reads, and output staging.

A stage reaches the run's files only through here, and only those it declared: ``read`` and
``path`` for what it reads (``register_stage(reads=...)``), ``output`` for what it writes
(``writes=...``). An undeclared one would escape its key or its digest, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.atomic import read_json, remove, remove_partials, replace, write_json
from pipeline.catalog import Artifact
from pipeline.config import Workflow
from pipeline.layout import RunLayout
from pipeline.stages.registry import Stage
from pipeline.workflow_view import WorkflowView

if TYPE_CHECKING:
    import torch

    from pipeline.device import Compute


@dataclass
class StageContext:
    """What a stage receives: the workflow (a view of the config the stage declared), the
    paths, and staging."""

    workflow: Workflow | WorkflowView
    layout: RunLayout
    stage: Stage
    key: str
    client: Any = None
    shard: tuple[int, int] | None = None  # (index, count): fill only this share of the chunks
    compute: Compute | None = None  # what the stage computed with (compute_on), for its stamp
    _outputs: list[tuple[Path, Path, bool]] = field(default_factory=list)  # staged, final, store
    _discarded: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The stage sees only the config it declared (see pipeline.workflow_view).
        if not isinstance(self.workflow, WorkflowView):
            self.workflow = WorkflowView(self.workflow, self.stage.name,
                                         self.stage.declared_config)

    @property
    def name(self) -> str:
        return self.stage.name

    def path(self, item: Artifact) -> Path:
        """Where ``item`` is: one the stage reads or writes (a writer's final path, which
        its messages name; it writes under :meth:`output`)."""
        if item not in self.stage.reads and item not in self.stage.writes:
            raise RuntimeError(f"stage '{self.name}' opens {item.name}, which it does not "
                               "declare in register_stage(reads=...)")
        return item.path(self.layout)

    def read(self, item: Artifact) -> Any:
        """What ``item`` holds (see :meth:`pipeline.catalog.Artifact.read`), for an artifact
        the stage declared it reads."""
        if item not in self.stage.reads:
            raise RuntimeError(f"stage '{self.name}' reads {item.name}, which it does not "
                               "declare in register_stage(reads=...)")
        return item.read(item.path(self.layout))

    def output(self, item: Artifact) -> Path:
        """Return the staging path to write ``item`` under; the runner moves it into place.

        A resumable artifact keeps its staging path across killed runs as long as the stage's
        key is unchanged (recorded in a ``.key`` file beside it), so the stage can continue
        where it was; what a killed write left half-done inside it is removed first. Only the
        artifacts the stage declared (``register_stage(writes=...)``) can be staged: an
        undeclared one would escape its stamp's digest and the status of its downstream stages.
        """
        if item not in self.stage.writes:
            raise RuntimeError(f"stage '{self.name}' writes {item.name}, which it does not "
                               "declare in register_stage(writes=...)")
        final = item.path(self.layout)
        staged = self.layout.staging(final, item.resumable)
        marker = staged.parent / f"{staged.name}.key"
        if not item.resumable or read_json(marker) != self.key:
            remove(staged)
            remove(marker)
        if item.resumable:
            if not item.sharded:  # a sibling shard may be writing into it right now
                remove_partials(staged)
            write_json(marker, self.key)
        self._outputs.append((staged, final, item.kind == "store"))
        return staged

    def write(self, item: Artifact, value: Any) -> None:
        """Write the table ``item`` (a DataFrame, checked against its schema) to its staging
        path."""
        item.write(value, self.output(item))

    def discard(self, item: Artifact) -> None:
        """Remove ``item`` when the outputs are moved into place: an optional output that this
        run does not produce (e.g. the data warnings of a folder that has none left)."""
        if item not in self.stage.writes:
            raise RuntimeError(f"stage '{self.name}' discards {item.name}, which it does not "
                               "declare in register_stage(writes=...)")
        self._discarded.append(item.path(self.layout))

    def compute_on(self, section: Any, deterministic: bool = False) -> torch.device:
        """The torch device of ``section``'s ``device`` option, with its ``tf32`` (and ``bf16``,
        where the section has one) applied and recorded for the stage's stamp (see
        :func:`pipeline.device.compute_on`); ``deterministic``: a stage whose outputs must be
        reproducible asks CUDA for deterministic algorithms."""
        from pipeline.device import compute_on

        device, self.compute = compute_on(section.device, tf32=getattr(section, "tf32", False),
                                          deterministic=deterministic,
                                          bf16=getattr(section, "bf16", False))
        return device

    @property
    def current_output(self) -> Path:
        """The output most recently asked for (or the run folder): the path an error names
        when the library that failed did not say which file it was writing."""
        return self._outputs[-1][1] if self._outputs else self.layout.run_dir

    def abandon(self) -> None:
        """Remove what a failed stage staged, except resumable outputs (a rerun continues them):
        a half-written folder must not keep the disk full that stopped it."""
        for staged, _, _ in self._outputs:
            if not staged.name.endswith(".partial"):
                remove(staged)

    def staged_outputs_exist(self) -> bool:
        """Whether every staged output is still there (not yet moved by another shard)."""
        return all(staged.exists() for staged, _, _ in self._outputs)

    def commit(self) -> None:
        """Move every staged output into place (called by the runner only)."""
        for staged, final, store in self._outputs:
            if not staged.exists():
                raise RuntimeError(f"stage '{self.name}' did not write {final.name}")
            if store:  # a finished store holds its arrays' files and nothing else
                remove_partials(staged)
            replace(staged, final)
            remove(staged.parent / f"{staged.name}.key")
        for final in self._discarded:
            remove(final)
