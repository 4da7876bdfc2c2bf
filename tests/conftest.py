"""Shared fixtures: a reduced copy of the demo workflow, run end to end in a temporary folder.

The ``slow`` marker (``python -m pytest -m "not slow"`` is the fast inner loop, under a minute
on two cores; CI and ``python -m pytest`` run everything): tests that start the pipeline as a
user would (``python -m pipeline`` in a subprocess) are marked in their modules; a test that
uses a fixture below which does so (a finished run, a browser, a small filesystem) is marked
here, so a new test on such a fixture is never silently fast-but-slow.

The ``device`` marker: a test written for a GPU, skipped where CUDA is not available. Every
other test computes on the CPU wherever it runs (issue 26): its workflows pin every section's
``device`` (support.pin_device), and what runs the pipeline for it refuses a workflow that
leaves one at "auto" (support.run_cli for the CLI in a subprocess, ``devices_pinned`` below for
``Runner.run`` in this process).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ON_DEVICE_ENV, TINY_DEMO, assert_devices_pinned, run_cli

SLOW_FIXTURES = frozenset({"tiny_run", "seed_runs", "evil_runs", "evil_run", "browser",
                           "small_filesystem"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that depends on one of SLOW_FIXTURES; skip the tests marked
    ``device`` where CUDA is not available."""
    cuda: bool | None = None
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("device") is not None:
            if cuda is None:  # torch only where a device test was collected
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="a device test: CUDA is not available"))


@pytest.fixture(autouse=True)
def devices_pinned(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked ``device`` may leave devices at "auto" (ON_DEVICE_ENV tells support's
    checks); any other test that runs stages in this process through ``Runner.run`` (the CLI's
    ``main`` included) fails if its workflow leaves a device at "auto"."""
    if request.node.get_closest_marker("device") is not None:
        monkeypatch.setenv(ON_DEVICE_ENV, "1")
        return
    monkeypatch.delenv(ON_DEVICE_ENV, raising=False)
    from pipeline.runner import Runner

    run = Runner.run

    def checked(self: Runner, *args, **kwargs):
        what = self.workflow.source or f"{self.workflow.name!r} (built in code)"
        assert_devices_pinned(self.workflow, f"the workflow {what}")
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Runner, "run", checked)


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
