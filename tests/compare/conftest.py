"""Fixtures of the compare tests: two demo runs that differ only in their training seed, two
runs over a data set whose class and run names carry markup, the sites compare wrote for them,
and the atlas tests' browser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from atlas.conftest import browser, watch  # noqa: F401 - the atlas tests' browser fixtures
from compare_runs import EVIL, EVIL_RUN, OFF, finish, seed_workflow, write
from support import folder_workflow, run_cli, save_random_checkpoint, served_copy, write_images


@pytest.fixture(scope="session")
def seed_runs(tmp_path_factory) -> Path:
    """A folder (with a space in its name) where seed1 and seed2 are finished and compared."""
    base = tmp_path_factory.mktemp("compare seeds")
    for seed in (1, 2):
        write(base, f"seed{seed}", seed_workflow(seed))
    finish(base, "seed1", "seed2")
    result = run_cli("compare", "-w", "workflows/seed1.toml", "-w", "workflows/seed2.toml",
                     cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base


@pytest.fixture(scope="session")
def site(seed_runs) -> Path:
    return seed_runs / "reports" / "seed1-vs-seed2"


@pytest.fixture(scope="session")
def evil_runs(tmp_path_factory) -> Path:
    """Two runs of random checkpoints (seeds 0 and 1) over classes whose names carry markup,
    one of them with markup in its own name, compared into ``reports/evil``."""
    base = tmp_path_factory.mktemp("share compare")
    data = base / "my data"
    write_images(data, [EVIL.replace("/", ""), "plain"], per_class=6, size=64, fmt="png")
    for seed, name in ((0, EVIL_RUN), (1, "plain-run")):
        checkpoint = save_random_checkpoint(base / "weights" / f"seed{seed}.pt", num_classes=2,
                                            seed=seed)
        text = f"name = {json.dumps(name)}\n" + folder_workflow(data, checkpoint, extra=OFF)
        write(base, f"seed{seed}", text)
    finish(base, "seed0", "seed1")
    result = run_cli("compare", "-w", "workflows/seed0.toml", "-w", "workflows/seed1.toml",
                     "-o", "reports/evil", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base


@pytest.fixture
def served(site, tmp_path) -> Iterator[str]:
    """The site copied to ``/team/compare/`` of a local HTTP server; yields that URL."""
    with served_copy(site, tmp_path / "www", "team/compare") as url:
        yield url
