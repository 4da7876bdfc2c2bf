"""What a stage receives from the runner: its workflow, the run's paths, and output staging."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.atomic import read_json, remove, replace, write_json
from pipeline.config import Workflow
from pipeline.layout import RunLayout
from pipeline.stages.registry import get_stage
from pipeline.workflow_view import WorkflowView


@dataclass
class StageContext:
    """What a stage receives: the workflow (a view of the config the stage declared), the
    paths, and staging."""

    workflow: Workflow | WorkflowView
    layout: RunLayout
    stage: str
    key: str
    client: Any = None
    shard: tuple[int, int] | None = None  # (index, count): fill only this share of the chunks
    _outputs: list[tuple[Path, Path]] = field(default_factory=list)
    _discarded: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The stage sees only the config it declared (see pipeline.stages.view).
        if not isinstance(self.workflow, WorkflowView):
            self.workflow = WorkflowView(self.workflow, self.stage, get_stage(self.stage).config)

    def output(self, final: Path, resumable: bool = False) -> Path:
        """Return the staging path to write ``final`` under; the runner moves it into place.

        A resumable output keeps its staging path across killed runs as long as the stage's key is
        unchanged (recorded in a ``.key`` file beside it), so the stage can continue where it was.
        Only the outputs the stage declared (``register_stage(outputs=...)``) can be staged: an
        undeclared one would escape its stamp's digest and the status of its downstream stages.
        """
        declared = {output.resolve(self.layout) for output in get_stage(self.stage).outputs}
        if final not in declared:
            raise RuntimeError(f"stage '{self.stage}' writes {final}, which it does not declare "
                               "in register_stage(outputs=...)")
        staged = self.layout.staging(final, resumable)
        marker = staged.parent / f"{staged.name}.key"
        if not resumable or read_json(marker) != self.key:
            remove(staged)
            remove(marker)
        if resumable:
            write_json(marker, self.key)
        self._outputs.append((staged, final))
        return staged

    def discard(self, final: Path) -> None:
        """Remove ``final`` when the outputs are moved into place: an optional output that this
        run does not produce (e.g. the data warnings of a folder that has none left)."""
        self._discarded.append(final)

    @property
    def current_output(self) -> Path:
        """The output most recently asked for (or the run folder): the path an error names
        when the library that failed did not say which file it was writing."""
        return self._outputs[-1][1] if self._outputs else self.layout.run_dir

    def abandon(self) -> None:
        """Remove what a failed stage staged, except resumable outputs (a rerun continues them):
        a half-written folder must not keep the disk full that stopped it."""
        for staged, _ in self._outputs:
            if not staged.name.endswith(".partial"):
                remove(staged)

    def staged_outputs_exist(self) -> bool:
        """Whether every staged output is still there (not yet moved by another shard)."""
        return all(staged.exists() for staged, _ in self._outputs)

    def commit(self) -> None:
        """Move every staged output into place (called by the runner only)."""
        for staged, final in self._outputs:
            if not staged.exists():
                raise RuntimeError(f"stage '{self.stage}' did not write {final.name}")
            replace(staged, final)
            remove(staged.parent / f"{staged.name}.key")
        for final in self._discarded:
            remove(final)
