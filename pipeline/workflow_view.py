"""The workflow as one stage sees it: only the config sections and options it declared.

A stage is a function of its declared config (DESIGN.md): its ``config`` goes into its stamp, its
``unkeyed`` (execution-only options, and options whose effect reaches it through its inputs) do
not. A read of anything else would be a result that its stamp does not follow (a stage that
read ``rank.top_k`` without declaring it would stay done when ``top_k`` changed), so the view
refuses it at once, naming the stage and the option, however deep in a helper the read is.

It lives outside ``pipeline.stages`` because it travels: a dask worker unpickling a shard task
imports this module, and must not import (and so register) every stage.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Workflow

#: What a workflow carries besides its sections: who it is, not what it computes.
IDENTITY = ("name", "source")


class UndeclaredConfig(RuntimeError):
    """A stage read a config section or option its registration does not declare (a bug in
    the stage, not the user's mistake)."""


class WorkflowView:
    """Read access to ``workflow`` limited to ``declared`` ('section' or 'section.option')."""

    def __init__(self, workflow: Workflow, stage: str, declared: tuple[str, ...]) -> None:
        self._workflow, self._stage, self._declared = workflow, stage, tuple(declared)

    def __reduce__(self) -> tuple:  # dask workers unpickle what a shard task carries
        return WorkflowView, (self._workflow, self._stage, self._declared)

    def __repr__(self) -> str:
        return f"WorkflowView({self._workflow.name!r}, stage={self._stage!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # also while unpickling, before __init__ has run
            raise AttributeError(name)
        if name in IDENTITY:
            return getattr(self._workflow, name)
        return self.section(name)

    def section(self, name: str) -> Any:
        """Config section ``name``: whole when declared whole, else limited to its declared
        options."""
        value = self._workflow.section(name)
        if name in self._declared:
            return value
        options = tuple(key.partition(".")[2] for key in self._declared
                        if key.partition(".")[0] == name)
        if not options:
            raise UndeclaredConfig(
                f"stage '{self._stage}' reads config section [{name}], which it does not "
                f"declare; add it to register_stage(config=...) if it changes the stage's "
                f"results, else to unkeyed=...")
        return SectionView(value, name, self._stage, options)

    def with_absolute_paths(self) -> WorkflowView:
        """The same view of :meth:`Workflow.with_absolute_paths` (for dask workers)."""
        return WorkflowView(self._workflow.with_absolute_paths(), self._stage, self._declared)


class SectionView:
    """One config section, limited to the options a stage declared."""

    def __init__(self, section: Any, name: str, stage: str, options: tuple[str, ...]) -> None:
        self._section, self._name, self._stage, self._options = section, name, stage, options

    def __reduce__(self) -> tuple:
        return SectionView, (self._section, self._name, self._stage, self._options)

    def __getattr__(self, option: str) -> Any:
        if option.startswith("_"):
            raise AttributeError(option)
        if option not in self._options:
            raise UndeclaredConfig(
                f"stage '{self._stage}' reads {self._name}.{option}, which it does not "
                f"declare; add '{self._name}.{option}' to register_stage(config=...) if it "
                f"changes the stage's results, else to unkeyed=...")
        return getattr(self._section, option)
