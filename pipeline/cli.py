"""The command line: parses arguments, loads the workflow once, hands it to a command.

No logic lives here: the commands are in :mod:`pipeline.commands` (which never imports this
module, and imports torch only inside the command that needs it, so ``--help`` is instant).
User errors are printed as one line and exit with status 2, failures of the machine (a full
disk, a permission) as one line with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.commands import DEFAULT_WORKFLOW, dispatch
from pipeline.errors import StageFailure, UserError

STAGE_NAMES = ("prepare", "train", "activations", "rank", "deconv", "featurevis", "occlusion",
               "evolution", "invariance", "sanity", "render")  # = the registry


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N like 0/2, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= I < N")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (also used to document them in the README)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Deconv Atlas: run a CNN over a data set, rank every unit's top images, "
        "project them with Zeiler & Fergus's deconvnet and render a static HTML atlas.",
    )
    parser.add_argument("--version", action="version", version=f"deconv-atlas {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_workflow(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-w", "--workflow", type=Path, default=DEFAULT_WORKFLOW,
                         help=f"workflow TOML file (default: {DEFAULT_WORKFLOW})")
        sub.add_argument("--data", metavar="PATH", default=None,
                         help="override the workflow's [data] root")

    run = commands.add_parser(
        "run", help="run every stage (all) or one stage",
        description="Run the stages of a workflow. 'all' runs every stage that is not up to date; "
        "a single stage first runs its out-of-date inputs, then always reruns itself, which makes "
        "the stages after it stale.",
    )
    run.add_argument("target", nargs="?", default="all", choices=("all", *STAGE_NAMES),
                     metavar="{all," + ",".join(STAGE_NAMES) + "}",
                     help="'all' (default) or one stage")
    add_workflow(run)
    run.add_argument("--force", action="store_true",
                     help="with 'all': rerun every stage even when up to date (a single stage "
                     "always reruns; --force never reruns its finished inputs)")
    run.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                     help="with 'activations': fill only the I-th of N disjoint shares of the "
                     "chunks (0 <= I < N), so N processes or GPUs can share one store; the last "
                     "shard to finish completes the stage")
    run.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="run the dask-aware stages (activations as one task per shard, rank) on "
                     "the dask scheduler at ADDRESS, e.g. tcp://host:8786; overrides [dask] "
                     "scheduler ('' runs on this machine). Workers need this package and the run "
                     "folder at the same path")

    status = commands.add_parser(
        "status", help="show each stage: done / stale / missing, with timings and devices",
        description="Show the state of every stage of a workflow, when it finished, how long "
        "it took and what it computed with (device, float32 or TF32, bf16 autocast, "
        "deterministic algorithms). The workflow is checked first as `run all` would check "
        "it: a mistake is one line and exit status 2.",
    )
    add_workflow(status)

    serve = commands.add_parser(
        "serve", help="serve the atlas over HTTP on this machine and print its URL",
        description="Serve reports/<workflow>/ with Python's HTTP server on 127.0.0.1 until "
        "Ctrl-C, to browse the atlas as it will look on static hosting. Opening index.html "
        "from disk works too; publishing means copying that folder to any static host.",
    )
    add_workflow(serve)
    serve.add_argument("--port", type=int, default=8000, metavar="N",
                       help="port to listen on (default: 8000; 0 picks a free one)")

    layers = commands.add_parser(
        "layers", help="list the analysable layers with output shapes and receptive fields",
        description="List the layers the atlas analyses by default (each conv block's "
        "activation output, labelled conv1..convN) with their dotted module name, output shape "
        "and receptive field (size, jump between units, and the input position of unit (0, 0)'s "
        "field), computed from the modules' geometry, and whether the deconvnet and guided "
        "backprop apply to each (or which nonlinearity without a rule blocks them). No weights "
        "or data are needed; a workflow's model and [activations] modules are checked as `run` "
        "checks them.",
    )
    source = layers.add_mutually_exclusive_group()
    source.add_argument("-w", "--workflow", type=Path, default=None,
                        help=f"the model of this workflow (default: {DEFAULT_WORKFLOW})")
    source.add_argument("--model", metavar="NAME", default=None,
                        help="a registered, torchvision or timm model name, e.g. alexnet, vgg16, "
                        "timm/resnet50 (a model file of yours: -w a workflow naming its "
                        "[model] factory)")
    layers.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="input side in pixels (default: the workflow's; with --model the "
                        "size the model is made for: 64 for zfnet_small, else 224)")
    layers.add_argument("--all", action="store_true", dest="all_modules",
                        help="list every module with a feature-map output, not just the default "
                        "(any of them can go in [activations] modules)")
    layers.set_defaults(data=None)

    compare = commands.add_parser(
        "compare", help="write a static site comparing two finished runs (Figure 6)",
        description="Write a static site comparing two finished runs: their first-layer filters "
        "side by side (the paper's Figure 6 a, b), the most selective units of their second "
        "layers (Figure 6 c, d), what sets the runs apart (model, weights, data, accuracy) and, "
        "layer by layer, dead units, class selectivity and activations. Run both workflows "
        "first (`python -m pipeline run all -w A.toml`, at least up to deconv). The site is "
        "self-contained, like the atlas: copy the folder anywhere, open index.html from disk.",
    )
    compare.add_argument("-w", "--workflow", type=Path, action="append", required=True,
                         metavar="TOML", help="a workflow file; give exactly two: -w A.toml "
                         "-w B.toml (A is shown on the left)")
    compare.add_argument("--data", metavar="PATH", default=None,
                         help="the [data] root both runs were made with, if it was given to "
                         "`run` as --data rather than in the workflow files")
    compare.add_argument("-o", "--out", type=Path, default=None, metavar="DIR",
                         help="folder to write (default: reports/<A>-vs-<B>/); a folder that is "
                         "not an earlier comparison is never replaced")
    compare.add_argument("--units", type=int, default=24, metavar="N",
                         help="second-layer units shown per run, most selective first "
                         "(default: 24; 0: every live unit)")
    compare.set_defaults(usage_error=compare.error)
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """What argparse cannot say by itself, said as its usage errors (exit status 2)."""
    if args.command == "compare":
        if len(args.workflow) != 2:
            args.usage_error(f"give exactly two workflows (-w A.toml -w B.toml), got "
                             f"{len(args.workflow)}")
        if args.units < 0:
            args.usage_error(f"--units must be 0 (every live unit) or more, got {args.units}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pipeline`` and ``deconv-atlas``; returns the exit status."""
    args = build_parser().parse_args(argv)
    check_arguments(args)
    try:
        return dispatch(args)
    except UserError as error:
        _finish_progress()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StageFailure as error:
        _finish_progress()
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        return 0
    except OSError as error:  # outside a stage: the run folder's lock or log, say
        from pipeline.errors import describe_os_error

        _finish_progress()
        path, cause = describe_os_error(error, Path.cwd())
        print(f"error: {path}: {cause}; fix that and run the same command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _finish_progress() -> None:
    """End the progress bar a stage was drawing when it failed (if the bars were loaded)."""
    progress = sys.modules.get("pipeline.progress")
    if progress is not None:
        progress.finish_open_bars()
