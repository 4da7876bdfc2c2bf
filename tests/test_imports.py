"""The package's import graph: no cycle, and the work never imports the stages.

Read with ``ast`` rather than by importing, so every import counts, also one inside a function
(it runs the moment that function is called, e.g. in a dask worker unpickling a task). Imports
under ``if TYPE_CHECKING:`` never run and are left out. Importing ``pipeline.x.y`` also runs
``pipeline/x/__init__.py``, so that edge is in the graph too.
"""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import import_cycles, lazy_exports

import pipeline

PACKAGE = Path(pipeline.__file__).parent

# Which package may import which is tests/test_import_tiers.py's TIERS; here: no cycle at all
# (function-level imports included), and the work a dask worker loads never loads the stages.


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


@functools.cache  # read once per session: three tests walk it
def import_graph() -> dict[str, set[str]]:
    """Each ``pipeline`` module -> the ``pipeline`` modules importing it runs (including the
    ``__init__`` of every package on the way, except the module's own packages: Python has
    imported those before the module runs)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path): path for path in paths}
    lazy = lazy_exports(PACKAGE)  # from pipeline.interp import Projector runs its module
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for target in _imported(tree, name, path.name == "__init__.py"):
            parts = lazy.get(target, target).split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                # A module's own packages are always imported before it runs: no edge.
                if prefix in modules and not (name == prefix or name.startswith(prefix + ".")):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_package_has_no_import_cycle():
    found = import_cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


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
    assert import_cycles(graph) == [["a", "b", "c", "a"]]


def test_the_atlas_workers_import_neither_torch_nor_dask():
    """Each render worker imports its task modules when it starts; torch, torchvision and dask
    came with them through the packages' ``__init__`` (of ``pipeline.interp`` for the
    projection records, of ``pipeline.ranking`` for the class priors) and cost each worker
    3-4 s of CPU."""
    from pipeline.atlas.render_run import WORKER_MODULES

    modules = (*WORKER_MODULES, "pipeline.interp.projection_meta", "pipeline.ranking.picks")
    probe = (f"import sys; import {', '.join(modules)}; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', "
             "'dask', 'distributed'}))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, timeout=300, check=True)
    assert result.stdout.strip() == "[]"


def test_a_lazy_package_name_is_its_module_s_and_an_unknown_one_is_refused():
    import pipeline.interp
    import pipeline.ranking
    from pipeline.interp.projector import Projector
    from pipeline.ranking.meta import read_rank_meta

    assert pipeline.interp.Projector is Projector
    assert pipeline.ranking.read_rank_meta is read_rank_meta
    with pytest.raises(AttributeError, match="pipeline.interp.*no attribute 'Nothing'"):
        pipeline.interp.Nothing  # noqa: B018
    for package in (pipeline.interp, pipeline.ranking):
        assert all(hasattr(package, name) for name in package.__all__)


def test_a_lazily_exported_name_is_an_edge_to_the_module_that_defines_it():
    """``from pipeline.interp import Projector`` runs ``pipeline/interp/projector.py``, though
    the package's ``__init__`` imports it only under ``TYPE_CHECKING``."""
    assert lazy_exports(PACKAGE)["pipeline.interp.Projector"] == "pipeline.interp.projector"
    # evolution_run imports them only as `from pipeline.interp import Projector, ...`
    assert {"pipeline.interp.projector", "pipeline.interp.receptive_field"} <= \
        import_graph()["pipeline.experiments.evolution_run"]
