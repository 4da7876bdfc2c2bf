"""The commands behind the CLI, each a function of the parsed arguments and the loaded workflow."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from pipeline.atomic import read_json
from pipeline.config import Workflow, load_workflow
from pipeline.errors import UserError
from pipeline.layout import RunLayout

# The workflow a command loads when none is named (the parser shows it in --help).
DEFAULT_WORKFLOW = Path("workflows") / "demo.toml"


def dispatch(args: argparse.Namespace) -> int:
    """Load the workflow once and run the chosen command."""
    if args.command == "layers":
        return layers(args)
    if args.command == "compare":
        return compare(args.workflow, args.data, args.out, args.units)
    workflow = load_workflow(args.workflow, data_root=args.data)
    layout = RunLayout(base=Path.cwd(), workflow=workflow.name)
    if args.command == "run":
        scheduler = workflow.dask.scheduler if args.scheduler is None else args.scheduler
        return run(workflow, layout, args.target, args.force, args.shard, scheduler)
    if args.command == "status":
        return status(workflow, layout)
    if args.command == "serve":
        return serve(workflow, layout, args.port)
    raise AssertionError(f"unhandled command {args.command}")


def run(workflow: Workflow, layout: RunLayout, target: str, force: bool,
        shard: tuple[int, int] | None = None, scheduler: str = "") -> int:
    """Run ``target`` (on the dask cluster at ``scheduler``, if any) and, when the atlas exists,
    end by printing where it is."""
    from pipeline.runner import Runner

    if scheduler and shard:
        raise UserError("--shard and a dask scheduler exclude each other: on a cluster the "
                        "activations stage submits its own shard tasks; drop one of them")
    client = None
    if scheduler:
        from pipeline.cluster import connect

        client = connect(scheduler)
        print(f"dask scheduler {scheduler}, dashboard {client.dashboard_link}")
    try:
        Runner(workflow, layout, client).run(target, force=force, shard=shard)
    finally:
        if client is not None:
            client.close()
    if layout.index_html.exists():
        print(f"atlas: {layout.index_html}")
    return 0


def status(workflow: Workflow, layout: RunLayout) -> int:
    """Print a table of the stages' states."""
    from pipeline.preflight import check_run
    from pipeline.runner import Runner

    runner = Runner(workflow, layout)
    check_run(workflow, layout, runner.plan("all"))  # what `run all` would refuse, said now
    rows = runner.status()
    print(f"workflow {workflow.name} ({workflow.source}), run folder {layout.run_dir}")
    runner.say_outdated()
    print(f"{'stage':<12} {'state':<8} {'finished (UTC)':<26} {'seconds':>8}  computed with")
    for row in rows:
        seconds = f"{row.seconds:.1f}" if row.seconds is not None else "-"
        print(f"{row.name:<12} {row.state:<8} {row.finished or '-':<26} {seconds:>8}  "
              f"{row.compute or '-'}")
    store = read_json(layout.activations / "zarr.json")  # the root's metadata, without zarr
    if store is not None:  # only a finished store is moved into place
        from pipeline.inference.store import InferenceSummary

        accuracy = InferenceSummary.from_attrs(store["attributes"])
        print(f"accuracy on {accuracy.n_readable} images: "
              f"top-1 {accuracy.top1:.1%}, top-5 {accuracy.top5:.1%}")
    return 0


def serve(workflow: Workflow, layout: RunLayout, port: int) -> int:
    """Serve the atlas folder on 127.0.0.1 until interrupted."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    if not layout.index_html.exists():
        raise UserError(f"{layout.index_html}: no atlas yet; run `python -m pipeline run all -w "
                        f"{workflow.source}` first")

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
            pass

    handler = functools.partial(QuietHandler, directory=str(layout.report_dir))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise UserError(f"port {port}: cannot listen ({error.strerror}); pick another with "
                        "--port N") from None
    with server:
        print(f"serving {layout.report_dir.name}/ at http://127.0.0.1:{server.server_port}/ "
              "(Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
    return 0


def layers(args: argparse.Namespace) -> int:
    """Print the analysable layers of a workflow's model or of a named model, each marked with
    whether the deconvnet and guided backprop apply to it, and what the defaults are when they
    are not plain rectified outputs."""
    from pipeline.interp.layers import default_notes, feature_map_names
    from pipeline.interp.rules import unruled_layers
    from pipeline.models import default_image_size, get_model, takes_image_size
    from pipeline.preflight import check_model, checked_build, checked_layers
    from pipeline.run_inputs import preprocessing

    names: Sequence[str]
    if args.model:
        size = args.image_size or default_image_size(args.model)
        options = {"image_size": size} if takes_image_size(args.model) else {}
        model = checked_build(lambda: get_model(args.model, num_classes=1000, **options),
                              f"model '{args.model}'")
        title, names = args.model, ()
    else:
        workflow = load_workflow(args.workflow or DEFAULT_WORKFLOW)
        if args.image_size:
            workflow = dataclasses.replace(workflow, model=dataclasses.replace(
                workflow.model, image_size=args.image_size, weights=""))
        model, title = check_model(workflow, num_classes=1000), workflow.model.label
        size, names = preprocessing(workflow).input_size, workflow.activations.modules
    if args.all_modules:
        names = feature_map_names(model, (size, size))
    found = checked_layers(model, size, names, f"model '{title}'", "--image-size",
                           allow_empty=True)
    try:
        blocked = unruled_layers(model, (size, size), [layer.name for layer in found])
    except Exception:  # noqa: BLE001 - a forward that needs real tensors, as checked_layers saw
        model = model.to_empty(device="cpu")
        blocked = unruled_layers(model, (size, size), [layer.name for layer in found])
    print(f"{title} at {size} x {size} px: {len(found)} layers")
    if found:
        print(f"{'layer':<16} {'module':<28} {'output (C x H x W)':<20} {'receptive field':<16}"
              f" {'jump':>5} {'first (y, x)':>13}  deconvnet/guided")
    for layer in found:
        field = layer.receptive_field
        shape = " x ".join(str(n) for n in layer.out_shape)
        size_text = (f"{field.size[0]}" if field.size[0] == field.size[1]
                     else f"{field.size[0]} x {field.size[1]}")
        jump = f"{field.jump[0]}" if field.jump[0] == field.jump[1] else str(field.jump)
        call = blocked[layer.name]
        rule = "yes" if call is None else f"no: {call.kind}" + (
            f" in {call.module}" if call.module and call.module != layer.name else "")
        print(f"{layer.label:<16} {layer.name:<28} {shape:<20} {size_text + ' px':<16}"
              f" {jump:>5} {str(field.first):>13}  {rule}")
    if not names:
        for note in default_notes(model, (size, size)):
            print(f"{title}: {note}")
        if not found:
            print(f"{title}: no default layers; name modules in [activations] modules "
                  "(`layers --all` lists those with a known receptive field)")
    if any(blocked.values()):
        print(f"{title}: deconvnet and guided refuse the layers marked \"no\" (that "
              "nonlinearity has no rule); project them with method = \"gradient\"")
    return 0



def compare(workflow_files: list[Path], data_root: str | None, out: Path | None,
            units: int) -> int:
    """Write the comparison site of two finished runs; print where it is."""
    from pipeline.atomic import remove, replace
    from pipeline.compare.gather import gather
    from pipeline.compare.site import is_comparison_site, write_site
    from pipeline.run_inputs import compare_inputs

    runs = []
    for path in workflow_files:
        workflow = load_workflow(path, data_root=data_root)
        runs.append((workflow, RunLayout(base=Path.cwd(), workflow=workflow.name)))
    (first, _), (second, _) = runs
    if first.name == second.name:
        raise UserError(f"{first.source} and {second.source} are the same run (runs/"
                        f"{first.name}); compare two workflows with different names")
    for workflow, layout in runs:
        _check_finished(workflow, layout)
    out = out or RunLayout.comparison(Path.cwd(), first.name, second.name)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not is_comparison_site(out):
        raise UserError(f"{out}: exists and is not a comparison site; pick another folder with "
                        "-o, or remove it")
    staged = RunLayout.staging(out)
    remove(staged)
    try:
        staged.mkdir(parents=True)
        write_site(gather(compare_inputs(*runs[0]), compare_inputs(*runs[1]), staged, units),
                   staged)
        replace(staged, out)
    finally:
        remove(staged)
    print(f"comparison: {out / 'index.html'}")
    return 0


#: What compare reads: the ranked units and their projections (and the weights, for layer 1).
COMPARED_STAGES = ("rank", "deconv")


def _check_finished(workflow: Workflow, layout: RunLayout) -> None:
    """Refuse (one line naming the workflow file) a run whose ranking or projections are not
    done, or stale against its workflow file: its pages would show another run's state."""
    from pipeline.runner import Runner

    runner = Runner(workflow, layout)
    for stage in COMPARED_STAGES:
        state = runner.state(stage)
        if state != "done":
            raise UserError(f"{workflow.source}: this run is not finished (stage {stage} is "
                            f"{state}); run `python -m pipeline run all -w {workflow.source}` "
                            "first, then compare")
