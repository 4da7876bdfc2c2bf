"""The commands behind the CLI, each a function of the parsed arguments and the loaded workflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import Workflow, load_workflow
from pipeline.layout import RunLayout


def dispatch(args: argparse.Namespace) -> int:
    """Load the workflow once and run the chosen command."""
    workflow = load_workflow(args.workflow, data_root=args.data)
    layout = RunLayout(base=Path.cwd(), workflow=workflow.name)
    if args.command == "run":
        return run(workflow, layout, args.target, args.force)
    if args.command == "status":
        return status(workflow, layout)
    raise AssertionError(f"unhandled command {args.command}")


def run(workflow: Workflow, layout: RunLayout, target: str, force: bool) -> int:
    """Run ``target`` and, when the atlas exists, end by printing where it is."""
    from pipeline.runner import Runner

    Runner(workflow, layout).run(target, force=force)
    if layout.index_html.exists():
        print(f"atlas: {layout.index_html}")
    return 0


def status(workflow: Workflow, layout: RunLayout) -> int:
    """Print a table of the stages' states."""
    from pipeline.runner import Runner

    rows = Runner(workflow, layout).status()
    print(f"workflow {workflow.name} ({workflow.source}), run folder {layout.run_dir}")
    print(f"{'stage':<12} {'state':<8} {'finished (UTC)':<26} {'seconds':>8}")
    for row in rows:
        seconds = f"{row.seconds:.1f}" if row.seconds is not None else "-"
        print(f"{row.name:<12} {row.state:<8} {row.finished or '-':<26} {seconds:>8}")
    return 0
