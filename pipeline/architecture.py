"""The architecture page, ``docs/architecture.md``: the catalog and the stage registry as text.

Generated, never edited by hand (``python -m pipeline.architecture``); ``tests/test_catalog.py``
fails when the page and the code differ.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.catalog import ARTIFACTS, EXTERNALS, Artifact
from pipeline.layout import RunLayout

ARCHITECTURE_PAGE = Path("docs") / "architecture.md"

_INTRO = """\
# Architecture: the run's data, who writes it, who reads it

Generated from the catalog (`pipeline/catalog.py`) and the stage registry by
`python -m pipeline.architecture`; `tests/test_catalog.py` fails when this page and the code differ.

A **stage** (`pipeline/stages/`) is a thin adapter: it declares the artifacts it reads and writes
(`register_stage(reads=..., writes=..., config=...)`), opens only those through its context,
and hands plain data (paths, frames, arrays, models) to the library packages below it. Its
input stages are the writers of what it reads; its stamp key is built from their digests, the
config it declares and what it reads from outside the run folder. The packages are layered,
lowest first (`tests/test_import_tiers.py` holds every import to it):

| tier | packages |
|---|---|
{tiers}

## Stages

| stage | reads | writes | config (keyed) |
|---|---|---|---|
{stages}

## Artifacts

Paths are relative to `runs/<workflow>/` (the atlas: `reports/<workflow>/`).

| artifact | path | kind | writer | readers | what it holds |
|---|---|---|---|---|---|
{artifacts}

## From outside the run folder

| name | read by | what is digested |
|---|---|---|
{externals}

## Schemas

{schemas}
"""

#: The package's tiers, lowest first (the import test's TIERS says which modules are in each).
TIERS = (("base", "errors, atomic, locks, progress, background, lazy, labelled, device, "
                   "metadata, schemas"),
         ("config", "config, config_checks, workflow_view"),
         ("data", "data/"), ("models", "models/"), ("inference", "inference/"),
         ("ranking", "ranking/"), ("interp", "interp/"), ("experiments", "experiments/"),
         ("featurevis", "featurevis/"),
         ("sanity", "sanity/"), ("atlas", "atlas/"), ("compare", "compare/"),
         ("orchestration", "layout, catalog, architecture, run_inputs, stamps, cluster, stages/, "
                           "preflight, runner, commands, api, cli"))


def architecture_page() -> str:
    """The text of ``docs/architecture.md``, from the catalog and the registered stages."""
    from pipeline.stages import list_stages, readers_of, stage_writing

    layout = RunLayout(Path("."), "<workflow>")

    def where(item: Artifact) -> str:
        path = item.path(layout)
        base = layout.report_dir if item.kind == "site" else layout.run_dir
        shown = path.relative_to(base).as_posix()
        return f"`{shown if item.kind != 'site' else 'reports/<workflow>/'}`"

    def names(items: tuple) -> str:
        return ", ".join(item.name for item in items) or "-"

    stages = [f"| {stage.name} | {names(stage.reads)} | {names(stage.writes)} | "
              f"{', '.join(stage.config) or '-'} |" for stage in list_stages()]
    artifacts = []
    for item in ARTIFACTS:
        notes = [item.doc]
        if item.when:
            notes.append(f"only when [{item.when.replace('.', '] ')} is set")
        if item.resumable:
            notes.append("resumable")
        if item.sharded:
            notes.append("filled in shards")
        if not item.digested:
            notes.append("not digested")
        readers = ", ".join(stage.name for stage in readers_of(item)) or "-"
        artifacts.append(f"| {item.name} | {where(item)} | {item.kind} | "
                         f"{stage_writing(item).name} | {readers} | {'; '.join(notes)} |")
    externals = [f"| {item.name} | "
                 f"{', '.join(s.name for s in list_stages() if item in s.reads)} | {item.doc} |"
                 for item in EXTERNALS]
    schemas_text = []
    for item in ARTIFACTS:
        if item.table is not None:
            rows = "\n".join(f"| `{column}` | {column.dtype} | {column.doc} |"
                             for column in item.table.columns())
            schemas_text.append(f"### {item.name} (table `{item.table.__name__}`)\n\n"
                                f"| column | dtype | |\n|---|---|---|\n{rows}\n")
        elif item.store is not None:
            parts = [f"### {item.name} (store)\n\n{item.store.doc}."
                     + (f" Attributes: `{item.meta.split(':')[1]}`." if item.meta else "")]
            for title, arrays in (("root", item.store.root), ("each layer's group",
                                                               item.store.per_layer)):
                if arrays:
                    rows = "\n".join(f"| `{a.name}` | {', '.join(a.dims)} | {a.dtype} | {a.doc} |"
                                     for a in arrays)
                    parts.append(f"{title}:\n\n| array | dims | dtype | |\n|---|---|---|---|\n"
                                 f"{rows}")
            schemas_text.append("\n\n".join(parts) + "\n")
    return _INTRO.format(tiers="\n".join(f"| {name} | {members} |" for name, members in TIERS),
                         stages="\n".join(stages), artifacts="\n".join(artifacts),
                         externals="\n".join(externals),
                         schemas="\n".join(schemas_text)).rstrip("\n") + "\n"


if __name__ == "__main__":  # run as a script, this file is a second module: use the package's
    from pipeline import architecture

    architecture.ARCHITECTURE_PAGE.parent.mkdir(exist_ok=True)
    architecture.ARCHITECTURE_PAGE.write_text(architecture.architecture_page(), encoding="utf-8")
    print(f"wrote {architecture.ARCHITECTURE_PAGE}")
