"""The package's import graph: no cycle, and lower layers never import the layers above them.

Read with ``ast`` rather than by importing, so every import counts, also one inside a function
(it runs the moment that function is called, e.g. in a dask worker unpickling a task). Imports
under ``if TYPE_CHECKING:`` never run and are left out. Importing ``pipeline.x.y`` also runs
``pipeline/x/__init__.py``, so that edge is in the graph too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

PACKAGE = Path(pipeline.__file__).parent

# The layers, lowest first: a module imports only from its own layer or the ones below. The
# work itself (what a notebook or a dask worker loads) never reaches up into the orchestration
# that calls it, and nothing but the entry points imports the command line.
LAYERS = (
    ("pipeline", "pipeline.errors", "pipeline.atomic", "pipeline.locks", "pipeline.config",
     "pipeline.config_checks", "pipeline.layout", "pipeline.device", "pipeline.progress",
     "pipeline.metadata", "pipeline.workflow_view", "pipeline.labelled"),
    ("pipeline.data", "pipeline.models", "pipeline.interp", "pipeline.inference",
     "pipeline.ranking", "pipeline.experiments", "pipeline.sanity", "pipeline.atlas",
     "pipeline.cluster"),
    ("pipeline.stages", "pipeline.preflight", "pipeline.stamps"),
    ("pipeline.runner",),
    ("pipeline.compare", "pipeline.api", "pipeline.commands"),
    ("pipeline.cli", "pipeline.__main__"),
)

def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module ``tree`` imports at run time (absolute names, relative ones resolved)."""
    found: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = ".".join(base[:len(base) - node.level + 1]) if node.level else ""
            source = ".".join(part for part in (parent, node.module or "") if part)
            found.add(source)
            # ``from pipeline.x import y`` imports the module pipeline.x.y when there is one.
            found.update(f"{source}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each ``pipeline`` module -> the ``pipeline`` modules importing it runs (including the
    ``__init__`` of every package on the way, except the module's own packages: Python has
    imported those before the module runs)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path): path for path in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for target in _imported(tree, name, path.name == "__init__.py"):
            parts = target.split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                # A module's own packages are always imported before it runs: no edge.
                if prefix in modules and not (name == prefix or name.startswith(prefix + ".")):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_path_through(graph, component) for component in components]


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _layer(module: str) -> int:
    """Index in LAYERS of the longest name ``module`` is (in), e.g. pipeline.interp.maps -> 1."""
    matches = [(len(name), index) for index, names in enumerate(LAYERS) for name in names
               if module == name or (name != "pipeline" and module.startswith(name + "."))]
    assert matches, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return max(matches)[1]


def test_the_package_has_no_import_cycle():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_imports_from_a_layer_above_its_own():
    """E.g. a dask worker unpickling an inference task imports its module: were that to reach
    ``pipeline.stages``, every worker would register the whole pipeline."""
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items()
                    for target in targets if _layer(target) > _layer(module))
    assert not upward, "imports from a higher layer: " + "; ".join(upward)


def test_inference_never_imports_stages():
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items()
                    if _under(module, ("pipeline.inference",))
                    for target in targets if _under(target, ("pipeline.stages",)))
    assert not upward, "; ".join(upward)


@pytest.mark.slow
def test_a_worker_loading_a_shard_task_does_not_load_the_stages():
    """What a dask worker does when it unpickles a shard task, in a fresh interpreter."""
    probe = ("import sys, pipeline.inference.shard; "
             "print(sorted(m for m in sys.modules if m.startswith('pipeline.stages')))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, timeout=300, check=True)
    assert result.stdout.strip() == "[]"


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking_ones():
    """The checks above are only as good as the graph: a function-level import is an edge,
    one under ``if TYPE_CHECKING:`` is not."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pipeline.stages import registry\n"
        "def f():\n    from pipeline.runner import Runner\n"
        "from . import atomic\n")
    found = _imported(tree, "pipeline.inference.shard", is_package=False)
    assert "pipeline.runner" in found
    assert "pipeline.inference.atomic" in found
    assert not any(name.startswith("pipeline.stages") for name in found)


def test_a_cycle_is_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
