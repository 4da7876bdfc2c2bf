"""The package's tiers: each module imports only from a lower tier or from its own package, and
no module-level import cycle.

Read with ``ast``, not by importing, so an import inside a function counts too (it runs the
moment that function is called, e.g. in a dask worker unpickling a task). Imports under
``if TYPE_CHECKING:`` never run and are left out. A new module fails the test until it is added
to ``TIERS``.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from support import import_cycles, lazy_exports

import pipeline

PACKAGE = Path(pipeline.__file__).parent

# The tiers, lowest first. A module imports only from a lower tier or from its own package: the
# same first path component under pipeline/ (pipeline.data.decoded may import pipeline.data.images),
# or, in a tier listed in ONE_PACKAGE_TIERS, any module of that tier. A listed module that does
# not exist (yet) is fine; a module that is listed nowhere fails the test.
TIERS = [
    ("base", ["pipeline.errors", "pipeline.atomic", "pipeline.locks", "pipeline.progress",
              "pipeline.background", "pipeline.lazy",
              "pipeline.labelled", "pipeline.device", "pipeline.metadata", "pipeline.schemas",
              "pipeline.__init__"]),
    ("config", ["pipeline.config", "pipeline.config_checks", "pipeline.workflow_view"]),
    ("data", ["pipeline.data"]),
    ("models", ["pipeline.models"]),
    ("inference", ["pipeline.inference"]),
    ("ranking", ["pipeline.ranking"]),
    ("interp", ["pipeline.interp"]),
    ("experiments", ["pipeline.experiments"]),
    ("featurevis", ["pipeline.featurevis"]),
    ("sanity", ["pipeline.sanity"]),
    ("atlas", ["pipeline.atlas"]),
    ("compare", ["pipeline.compare"]),
    # run_inputs turns a workflow and a RunLayout into what the library takes: the stages'
    # side of the line, like the layout itself.
    ("orchestration", ["pipeline.layout", "pipeline.catalog", "pipeline.architecture",
                       "pipeline.run_inputs",
                       "pipeline.stamps", "pipeline.cluster", "pipeline.stages",
                       "pipeline.preflight", "pipeline.runner", "pipeline.commands",
                       "pipeline.api", "pipeline.cli", "pipeline.__main__"]),
]

# Tiers whose modules count as one package: they may import each other (but not in a cycle).
ONE_PACKAGE_TIERS = {"base", "config", "orchestration"}

# Edges that break the tiers today, "importer -> imported", each waiting for its fix. The test
# fails on an entry that no longer occurs, so the set only shrinks.
KNOWN_EXCEPTIONS: set[str] = set()  # an edge against the tiers, kept for now: none left


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a module of the package."""

    importer: str  # dotted module name, e.g. pipeline.data.decoded ("pipeline" for its __init__)
    path: Path
    line: int
    imported: str
    module_level: bool  # runs when the importer is imported (not inside a function)


def module_names(package: Path) -> dict[str, Path]:
    """Every module under ``package`` by dotted name; a package's ``__init__`` by the package's
    name."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(nodes: Iterable[ast.AST], module_level: bool = True,
                ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Each import statement among ``nodes`` and below that can run, and whether it runs when
    the module is imported (a class body does, a function body does not)."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse, module_level)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, module_level
        inside_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _statements(ast.iter_child_nodes(node), module_level and not inside_function)


def imports(package: Path) -> list[Import]:
    """Every import of one of the package's modules by another, relative ones resolved; ``from
    a import b`` counts as importing module ``a.b`` where there is one, else ``a``."""
    modules = module_names(package)
    lazy = lazy_exports(package)  # a lazily exported name imports its module when it runs
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node, module_level in _statements(tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                parent = ".".join(here[:len(here) - node.level + 1]) if node.level else ""
                source = ".".join(part for part in (parent, node.module or "") if part)
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                           else lazy.get(f"{source}.{alias.name}", source)
                           for alias in node.names]
            for target in dict.fromkeys(targets):
                while target and target not in modules:  # import a.b.func -> module a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.append(Import(name, path, node.lineno, target, module_level))
    return found


def _entry(module: str, tiers: Sequence[tuple[str, Sequence[str]]]) -> tuple[int, str] | None:
    """(tier index, TIERS entry) of ``module``: its own entry or its package's."""
    key = f"{module}.__init__" if "." not in module else module  # the top package's __init__
    for index, (_, entries) in enumerate(tiers):
        for entry in entries:
            if key == entry or (not entry.endswith(".__init__") and key.startswith(entry + ".")):
                return index, entry
    return None


def tier_violations(package: Path, tiers: Sequence[tuple[str, Sequence[str]]],
                    one_package_tiers: Collection[str] = (),
                    known: Collection[str] = ()) -> list[str]:
    """A message for each module in no tier and each import sideways or up the tiers (any
    import, also inside a function), except the edges in ``known``; and one for each entry of
    ``known`` that no longer occurs."""
    root = package.parent
    problems = [f"{module} ({path.relative_to(root)}) is in no tier: add it to TIERS in "
                f"{Path(__file__).name}"
                for module, path in module_names(package).items() if _entry(module, tiers) is None]
    seen_known = set()
    for edge in imports(package):
        importer, imported = _entry(edge.importer, tiers), _entry(edge.imported, tiers)
        if importer is None or imported is None:
            continue  # reported above
        name, target = tiers[importer[0]][0], tiers[imported[0]][0]
        same_package = importer[1] == imported[1] or (importer[0] == imported[0]
                                                      and name in one_package_tiers)
        if imported[0] < importer[0] or same_package:
            continue
        if f"{edge.importer} -> {edge.imported}" in known:
            seen_known.add(f"{edge.importer} -> {edge.imported}")
            continue
        direction = "sideways" if imported[0] == importer[0] else "upward"
        problems.append(f"{edge.path.relative_to(root)}:{edge.line} imports {edge.imported}: "
                        f"{direction}, from tier {importer[0] + 1} {name!r} to tier "
                        f"{imported[0] + 1} {target!r}")
    problems += [f"{edge} no longer occurs: remove it from KNOWN_EXCEPTIONS"
                 for edge in sorted(set(known) - seen_known)]
    return problems


def tier_problems(tiers: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Entries listed twice, or one inside another (a module must be in exactly one tier)."""
    entries = [entry for _, names in tiers for entry in names]
    twice = sorted({entry for entry in entries if entries.count(entry) > 1})
    nested = sorted(f"{inner} is inside {outer}" for outer in entries for inner in entries
                    if inner.startswith(outer + ".") and not outer.endswith(".__init__"))
    return [f"{entry} is listed twice in TIERS" for entry in twice] + nested


def module_level_graph(package: Path) -> dict[str, set[str]]:
    """Each module -> the modules importing it runs, at import time: the target and every
    package ``__init__`` on the way to it, less the importer's own packages (Python has
    imported those before the importer runs)."""
    graph: dict[str, set[str]] = {name: set() for name in module_names(package)}
    for edge in imports(package):
        if not edge.module_level:
            continue
        parts = edge.imported.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            own = edge.importer == prefix or edge.importer.startswith(prefix + ".")
            if prefix in graph and not own:
                graph[edge.importer].add(prefix)
    return graph


def test_tiers_list_each_module_once():
    assert not tier_problems(TIERS), "\n".join(tier_problems(TIERS))


def test_each_module_imports_only_from_lower_tiers_or_its_own_package():
    problems = tier_violations(PACKAGE, TIERS, ONE_PACKAGE_TIERS, KNOWN_EXCEPTIONS)
    assert not problems, "imports against the tiers:\n" + "\n".join(problems)


def test_no_module_level_import_cycle():
    found = import_cycles(module_level_graph(PACKAGE))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_checker_reports_an_upward_a_sideways_and_an_unlisted_import(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/low/__init__.py": "from pkg.low import a\n",
        "pkg/low/a.py": ("from typing import TYPE_CHECKING\n"
                         "from pkg import errors\n"
                         "if TYPE_CHECKING:\n    from pkg.high import b\n"
                         "def f():\n    from ..high.b import thing\n"),
        "pkg/side/__init__.py": "import pkg.low.a\n",
        "pkg/high/__init__.py": "",
        "pkg/high/b.py": "from pkg.low import a\nfrom . import c\nthing = 1\n",
        "pkg/high/c.py": "",
        "pkg/new.py": "",
    })
    tiers = [("base", ["pkg.errors", "pkg.__init__"]), ("low", ["pkg.low", "pkg.side"]),
             ("high", ["pkg.high"])]
    assert tier_violations(package, tiers) == [
        "pkg.new (pkg/new.py) is in no tier: add it to TIERS in test_import_tiers.py",
        "pkg/low/a.py:6 imports pkg.high.b: upward, from tier 2 'low' to tier 3 'high'",
        "pkg/side/__init__.py:1 imports pkg.low.a: sideways, from tier 2 'low' to tier 2 'low'",
    ]
    assert tier_violations(package, tiers, {"low"}, {"pkg.low.a -> pkg.high.b", "pkg.x -> pkg.y"}) \
        == ["pkg.new (pkg/new.py) is in no tier: add it to TIERS in test_import_tiers.py",
            "pkg.x -> pkg.y no longer occurs: remove it from KNOWN_EXCEPTIONS"]


def test_the_checker_names_a_module_level_cycle_and_not_a_lazy_or_type_checking_one(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import x\n",
        "pkg/b.py": "from . import c\nx = 1\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/lazy.py": "def f():\n    from pkg import typed\n",
        "pkg/typed.py": ("from typing import TYPE_CHECKING\nimport pkg.lazy\n"
                         "if TYPE_CHECKING:\n    import pkg.lazy\n"),
    })
    assert import_cycles(module_level_graph(package)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_tier_lists_tolerate_missing_modules_and_refuse_doubles():
    assert tier_problems([("a", ["p.x", "p.missing"]), ("b", ["p.y", "p.x", "p.y.z"])]) == [
        "p.x is listed twice in TIERS", "p.y.z is inside p.y"]


def test_the_architecture_page_lists_these_tiers():
    """docs/architecture.md (generated from pipeline.architecture.TIERS) shows the tiers held
    here, in this order, each with the modules listed here."""
    from pipeline.architecture import TIERS as PAGE_TIERS

    assert [name for name, _ in PAGE_TIERS] == [name for name, _ in TIERS]
    for (name, shown), (_, modules) in zip(PAGE_TIERS, TIERS, strict=True):
        listed = {part.strip().rstrip("/") for part in shown.split(",")}
        expected = {module.removeprefix("pipeline.") for module in modules
                    if module not in ("pipeline.__init__", "pipeline.__main__")}
        assert listed == expected, name
