"""Helpers the tests share: running the CLI as a user would, and a reduced demo workflow."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import typing
from collections.abc import Iterator, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from pipeline.config import Workflow

REPO = Path(__file__).resolve().parents[1]

# -- devices pinned (issue 26: tests mean the same everywhere) --------------------------------
#
# `device = "auto"`, every section's default, is CUDA on a machine with a GPU: a test that runs
# the pipeline there would compare other numbers (and its exact comparisons would mean something
# else). So every workflow a test writes goes through pin_device, and whatever runs the pipeline
# for a test (run_cli, cli_argv, Runner.run in process: see tests/conftest.py) refuses one that
# leaves a device at "auto", unless the test is marked `device` (written for a GPU; skipped
# without CUDA), which conftest.py says to these checks through ON_DEVICE_ENV.

#: Set, by an autouse fixture of tests/conftest.py, while a test marked ``device`` runs: its
#: workflows may leave a section's device at "auto".
ON_DEVICE_ENV = "DECONV_ATLAS_TEST_ON_DEVICE"


@functools.cache
def device_sections() -> tuple[str, ...]:
    """The workflow sections that have a ``device`` option, read from pipeline.config's
    dataclasses, so a section added later is pinned and checked without a change here."""
    from pipeline.config import Workflow

    hints = typing.get_type_hints(Workflow)
    return tuple(spec.name for spec in dataclasses.fields(Workflow)
                 if isinstance(hint := hints[spec.name], type) and dataclasses.is_dataclass(hint)
                 and any(option.name == "device" for option in dataclasses.fields(hint)))


def pin_device(text: str, device: str = "cpu") -> str:
    """The TOML workflow ``text`` with ``device = "<device>"`` in every section that has a
    ``device`` option (:func:`device_sections`) and does not pin one itself: the line goes right
    under the section's ``[section]`` header (or replaces its ``device = "auto"`` line), and
    where the text has no such section, a ``[section]`` table holding only it is appended. A
    device the text sets to anything but "auto" (``"banana"``, ``"cuda:0"``) is kept, so pinning
    is idempotent. Devices are execution options, left out of every stage's stamp: a pinned
    text computes what the unpinned one computes on a CPU.

    Pin the whole text a test writes: ``pin_device(A) + "[sanity]..."`` would define a table
    twice where pinning appended one (TOML refuses that), ``pin_device(A + "[sanity]...")`` does
    not. A ValueError for a section given otherwise than by one ``[section]`` header line (a
    dotted key, an inline table): set its device in the text itself."""
    table = tomllib.loads(text)
    expected = copy.deepcopy(table)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    line = f"device = {json.dumps(device)}\n"  # a TOML basic string
    for section in device_sections():
        given = table.get(section)
        if isinstance(given, dict) and given.get("device", "auto") != "auto":
            continue
        if given is None:
            lines.append(f"[{section}]\n{line}")
        else:
            at = _header_line(lines, section) if isinstance(given, dict) else None
            if at is None:
                raise ValueError(f"[{section}] is not one '[{section}]' header line in this "
                                 "workflow text; set its device in the text itself")
            if "device" in given:  # device = "auto", said in so many words
                auto = _auto_line(lines, at)
                if auto is None:
                    raise ValueError(f"[{section}] device = \"auto\" is not one line of its "
                                     "own under the header; set its device in the text itself")
                lines[auto] = line
            else:
                lines.insert(at + 1, line)
        expected.setdefault(section, {})["device"] = device
    pinned = "".join(lines)
    if tomllib.loads(pinned) != expected:  # e.g. a header line inside a multi-line string
        raise ValueError(f"pinning the devices changed more than the devices:\n{pinned}")
    return pinned


_TABLE_HEADER = re.compile(r"[ \t]*\[")
_AUTO_DEVICE = re.compile(r"""[ \t]*device[ \t]*=[ \t]*("auto"|'auto')[ \t]*(#.*)?\r?\n?""")


def _header_line(lines: list[str], section: str) -> int | None:
    """The index of the one ``[section]`` header line (not ``[section.sub]``), else None."""
    header = re.compile(rf"[ \t]*\[[ \t]*{re.escape(section)}[ \t]*\][ \t]*(#.*)?\r?\n?")
    found = [index for index, text in enumerate(lines) if header.fullmatch(text)]
    return found[0] if len(found) == 1 else None


def _auto_line(lines: list[str], header: int) -> int | None:
    """The index of the one ``device = "auto"`` line of the table whose header is at
    ``header`` (up to the next header line), else None."""
    end = next((index for index in range(header + 1, len(lines))
                if _TABLE_HEADER.match(lines[index])), len(lines))
    found = [index for index in range(header + 1, end) if _AUTO_DEVICE.fullmatch(lines[index])]
    return found[0] if len(found) == 1 else None


def pin_workflow(workflow: Workflow, device: str = "cpu") -> Workflow:
    """``workflow`` (built in code, not read from a file) with ``device`` in every section whose
    device is "auto"."""
    return dataclasses.replace(workflow, **{
        name: dataclasses.replace(workflow.section(name), device=device)
        for name in unpinned_sections(workflow)})


def unpinned_sections(workflow: Workflow) -> list[str]:
    """The sections of ``workflow`` whose device is "auto" (the machine's choice)."""
    return [name for name in device_sections() if workflow.section(name).device == "auto"]


def assert_devices_pinned(workflow: Workflow, what: str) -> None:
    """Fail the test when ``workflow`` (called ``what`` in the message) leaves a device at
    "auto", unless the test is marked ``device`` (:data:`ON_DEVICE_ENV`)."""
    if os.environ.get(ON_DEVICE_ENV):
        return
    unpinned = unpinned_sections(workflow)
    assert not unpinned, (
        f"{what} leaves device = \"auto\" in {', '.join(f'[{name}]' for name in unpinned)}: on "
        "a machine with a GPU that is CUDA, and the test would compare other numbers. Write the "
        "workflow's text through support.pin_device (a Workflow built in code through "
        "support.pin_workflow), or mark the test @pytest.mark.device if it is meant for a GPU")


def cli_workflows(args: Sequence[str], cwd: Path) -> list[tuple[Path, str | None]]:
    """The workflow files (with ``--data``) that ``python -m pipeline ARGS`` would read in
    ``cwd``, as pipeline.cli's own parser reads ARGS (abbreviations and the default workflow
    included); none for arguments it refuses (its usage error is what such a test checks)."""
    from pipeline.cli import build_parser

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parsed = build_parser().parse_args(list(args))
    except SystemExit:
        return []
    return parsed_workflows(parsed, cwd)


def parsed_workflows(parsed: argparse.Namespace, cwd: Path) -> list[tuple[Path, str | None]]:
    """What :func:`cli_workflows` says of arguments already parsed. None for ``layers``: it
    builds its model on the meta device and the CPU, whatever a section's device says (and
    takes no workflow with ``--model``)."""
    files = getattr(parsed, "workflow", None)
    if parsed.command == "layers" or files is None:
        return []
    data = getattr(parsed, "data", None)
    return [(cwd / path, data) for path in (files if isinstance(files, list) else [files])]


def check_cli_devices(args: Sequence[str], cwd: Path) -> None:
    """Fail the test when a workflow that ``python -m pipeline ARGS`` would read in ``cwd``
    leaves a device at "auto" (see :func:`assert_devices_pinned`). The file is read by the
    pipeline's own loader; one that does not exist or does not load is left to the CLI's own
    error, which is what a test giving it checks."""
    if os.environ.get(ON_DEVICE_ENV):
        return
    from pipeline.config import load_workflow
    from pipeline.errors import UserError

    for path, data in cli_workflows(args, cwd):
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # a renamed option's note
                workflow = load_workflow(path, data_root=data)
        except (UserError, OSError, UnicodeDecodeError):
            continue
        assert_devices_pinned(workflow, f"the workflow {path}")


def cli_argv(*args: str, cwd: Path) -> list[str]:
    """``[python, -m, pipeline, ARGS]``, for a test that starts the CLI itself (to kill it, to
    talk to it), once :func:`check_cli_devices` has passed its workflow."""
    check_cli_devices(args, cwd)
    return [sys.executable, "-m", "pipeline", *args]


#: Appended to a workflow a test runs whole that has no [featurevis] section: the stage still
#: runs (every model the pipeline takes must work with it), in seconds rather than hours. A
#: fragment: pin the whole text it ends (pin_device).
QUICK_FEATUREVIS = """
[featurevis]
steps = 4
units = 2
"""

#: The reduced demo with every device left at "auto": to add to or change before pinning the
#: whole (pin_device), where TINY_DEMO would get a table twice.
TINY_DEMO_UNPINNED = """
[data]
source = "synthetic"
[data.synthetic]
image_size = 64
train_per_class = 24
val_per_class = 12
seed = 3
[model]
name = "zfnet_small"
image_size = 64
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
[train]
enabled = true
epochs = 2
batch_size = 32
lr = 0.001
snapshot_epochs = [1, 2]
[activations]
batch_size = 20
chunk_size = 32
[rank]
top_k = 9
[deconv]
batch_size = 64
methods = ["deconvnet", "guided", "gradient"]
[featurevis]
steps = 8
"""

#: The reduced demo, every device pinned to the CPU.
TINY_DEMO = pin_device(TINY_DEMO_UNPINNED)


def tiny_demo(extra: str = "", device: str = "cpu") -> str:
    """The reduced demo with ``extra`` (TOML: sections it does not have, or options of its last
    one, [featurevis]) appended, pinned as a whole."""
    return pin_device(TINY_DEMO_UNPINNED + extra, device)


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` as a user would, in ``cwd``; first, fail the test if the
    workflow it reads leaves a device at "auto" (:func:`check_cli_devices`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cli_argv(*args, cwd=cwd), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_images(root: Path, classes: list[str], per_class: int, size: int = 48,
                 fmt: str = "JPEG", seed: int = 0) -> list[Path]:
    """A class-per-folder image set of smooth random colour images; returns the files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = []
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((size, size), Image.BILINEAR)
            path = root / name / f"{name}_{i:04d}.{fmt}"
            image.save(path, format="JPEG" if fmt == "JPEG" else fmt)
            files.append(path)
    return files


def save_random_checkpoint(path: Path, num_classes: int, seed: int = 0) -> Path:
    """A randomly initialised zfnet_small state dict, saved as a user's checkpoint would be."""
    import torch

    from pipeline.models import get_model

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(get_model("zfnet_small", num_classes=num_classes).state_dict(), path)
    return path


def folder_workflow(data: Path, checkpoint: Path, chunk_size: int = 8, batch_size: int = 4,
                    extra: str = "") -> str:
    """A workflow over an image folder with a fixed zfnet_small checkpoint (no training), with
    ``extra`` (TOML: sections it does not have, or options of its last one, [featurevis])
    appended, every device pinned to the CPU (pin_device)."""
    return pin_device(f"""
[data]
source = "imagefolder"
root = "{data}"
[model]
name = "zfnet_small"
checkpoint = "{checkpoint}"
image_size = 64
[activations]
batch_size = {batch_size}
chunk_size = {chunk_size}
[featurevis]
steps = 8
""" + extra)


def store_arrays(path: Path) -> dict:
    """Every array of a zarr store, by key, as numpy."""
    import numpy as np
    import zarr

    root = zarr.open_group(path, mode="r")
    arrays = {}

    def visit(group, prefix=""):
        for name, array in group.arrays():
            arrays[prefix + name] = np.asarray(array[:])
        for name, sub in group.groups():
            visit(sub, f"{prefix}{name}/")

    visit(root)
    return arrays


class _QuietHandler(SimpleHTTPRequestHandler):
    """No request log: it would land in the middle of pytest's progress line."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass


@contextlib.contextmanager
def served_copy(folder: Path, www: Path, prefix: str) -> Iterator[str]:
    """``folder`` copied to ``www/prefix`` and served by a local HTTP server; yields the URL of
    the copy (a static site must work under any URL prefix)."""
    shutil.copytree(folder, www / prefix)
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{prefix}/"
    finally:
        server.shutdown()
        server.server_close()


def fill_hub_cache(cache, hf_hub_id: str, state: dict) -> None:
    """Put the state dict ``state`` where huggingface_hub keeps ``hf_hub_id``'s weights."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + hf_hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))


#: A small model file of a user: non-sequential, functional ReLUs (tests of [model] factory).
OWN_MODEL_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn


class TwoPaths(nn.Module):
    """Non-sequential, with functional ReLUs: two branches added, then pooled."""

    def __init__(self, num_classes, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 5, stride=2, padding=2)
        self.left = nn.Conv2d(width, width, 3, padding=1)
        self.right = nn.Conv2d(width, width, 1)
        self.top = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        x = F.relu(self.left(x)) + F.relu(self.right(x))
        x = F.relu(self.top(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(num_classes, width=8):
    return TwoPaths(num_classes, width)
'''


@functools.cache
def lazy_exports(package: Path) -> dict[str, str]:
    """``"pkg.sub.Name" -> "pkg.sub.module"`` for every name a package ``__init__`` of
    ``package`` exports lazily (``__getattr__ = lazy_names(__name__, {...})``, see
    ``pipeline.lazy``): ``from pkg.sub import Name`` imports that module when it runs, which an
    import read off the syntax alone would not see."""
    import ast

    found = {}
    for init in sorted(package.rglob("__init__.py")):
        parts = init.relative_to(package.parent).parent.parts
        for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_names":
                names = ast.literal_eval(node.args[1])
                found.update({".".join((*parts, name)): ".".join((*parts, module))
                              for name, module in names.items()})
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle (a path back to its start) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for following in sorted(graph[node]):
            if following not in index:
                connect(following)
                low[node] = min(low[node], low[following])
            elif following in on_stack:
                low[node] = min(low[node], index[following])
        if low[node] == index[node]:
            component = set()
            while node not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(_shortest_cycle(graph, component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def _shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one
