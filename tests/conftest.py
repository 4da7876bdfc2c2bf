"""Shared fixtures: a reduced copy of the demo workflow, run end to end in a temporary folder.

The ``slow`` marker (``python -m pytest -m "not slow"`` is the fast inner loop, under a minute
on two cores; CI and ``python -m pytest`` run everything): tests that start the pipeline as a
user would (``python -m pipeline`` in a subprocess) are marked in their modules; a test that
uses a fixture below which does so (a finished run, a browser, a small filesystem) is marked
here, so a new test on such a fixture is never silently fast-but-slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TINY_DEMO, run_cli

SLOW_FIXTURES = frozenset({"tiny_run", "seed_runs", "evil_runs", "evil_run", "browser",
                           "small_filesystem"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that depends on one of SLOW_FIXTURES."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def write_workflow(tmp_path: Path):
    """Write a workflow file into ``tmp_path/workflows`` and return its path."""

    def write(text: str, name: str = "tiny") -> Path:
        path = tmp_path / "workflows" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which ``run all`` of the reduced demo has completed once."""
    base = tmp_path_factory.mktemp("tiny_run")
    (base / "workflows").mkdir()
    (base / "workflows" / "tiny.toml").write_text(TINY_DEMO, encoding="utf-8")
    result = run_cli("run", "all", "-w", "workflows/tiny.toml", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base
