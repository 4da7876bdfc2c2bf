"""A run killed in the middle of a stage resumes, and no stage is ever reported done early."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from support import REPO, TINY_DEMO, check_cli_devices, cli_argv, run_cli

from pipeline.stages import list_stages

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

STAGES = [stage.name for stage in list_stages()]  # the demo runs every stage


def _start(base: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cli_argv("run", "all", "-w", "workflows/tiny.toml", cwd=base),
                            cwd=base, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when_started(process: subprocess.Popen, log: Path, stage: str, delay: float) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and f"{stage}: start" in log.read_text(encoding="utf-8"):
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.02)
    pytest.fail(f"stage {stage} never started")


def _states(base: Path) -> dict[str, str]:
    result = run_cli("status", "-w", "workflows/tiny.toml", cwd=base)
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    return {row[0]: row[1] for row in rows if row and row[0] in STAGES}


def _assert_done_stages_are_complete(base: Path) -> None:
    """Whatever status calls done must have readable, complete outputs."""
    run = base / "runs" / "tiny"
    states = _states(base)
    if states["prepare"] == "done":
        assert len(pd.read_parquet(run / "manifest.parquet")) > 0
    if states["train"] == "done":
        assert (run / "model.pt").stat().st_size > 0
    if states["activations"] == "done":
        store = zarr.open_group(run / "activations.zarr", mode="r")
        assert (np.asarray(store["label"][:]) >= 0).all()
    if states["rank"] == "done":
        assert len(pd.read_parquet(run / "units.parquet")) > 0
    if states["render"] == "done":
        assert (base / "reports" / "tiny" / "index.html").is_file()


@pytest.mark.parametrize(("stage", "delay"), [("train", 1.5), ("activations", 0.3),
                                              ("deconv", 0.3), ("render", 0.2)])
def test_killed_run_resumes_to_completion(tmp_path, stage, delay):
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "tiny.toml").write_text(TINY_DEMO, encoding="utf-8")
    process = _start(tmp_path)
    _kill_when_started(process, tmp_path / "runs" / "tiny" / "pipeline.log", stage, delay)
    _assert_done_stages_are_complete(tmp_path)
    result = run_cli("run", "all", "-w", "workflows/tiny.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _states(tmp_path) == dict.fromkeys(STAGES, "done")
    assert (tmp_path / "reports" / "tiny" / "index.html").is_file()


#: Run the pipeline with zarr's chunk writer killing the whole process (SIGKILL) once its
#: temporary file is written but not yet renamed, at the Nth chunk written into ``store``.
_KILL_INSIDE_A_CHUNK_WRITE = """
import contextlib, os, signal, sys
import zarr.storage._local as local
store, after = sys.argv[1], int(sys.argv[2])
original, seen = local._atomic_write, [0]

@contextlib.contextmanager
def killing_write(path, mode, exclusive=False):
    with original(path, mode, exclusive) as handle:
        yield handle
        parts = str(path).split(os.sep)
        # a chunk: c/0/1 (a folder per index) or c.0.1 (side by side, FLAT_CHUNK_KEYS)
        if store in str(path) and ("c" in parts or parts[-1].startswith("c.")):
            seen[0] += 1
            if seen[0] == after:
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

local._atomic_write = killing_write
sys.argv = ["pipeline", "run", "all", "-w", "workflows/tiny.toml"]
from pipeline.cli import main
sys.exit(main())
"""


def _store_files(store: Path) -> dict[str, bytes]:
    return {path.relative_to(store).as_posix(): path.read_bytes()
            for path in sorted(store.rglob("*")) if path.is_file()}


def test_a_kill_inside_a_chunk_write_leaves_nothing_in_the_finished_stores(tmp_path, tiny_run):
    """zarr writes each chunk under a temporary ``<chunk>.<hex>.partial`` name and renames it:
    SIGKILL in between leaves that file in the staged store. The resumed run removes it, and
    the finished stores hold exactly their arrays' files, the same bytes as an uninterrupted
    run's."""
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "tiny.toml").write_text(TINY_DEMO, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    check_cli_devices(["run", "all", "-w", "workflows/tiny.toml"], tmp_path)  # the script's
    run = tmp_path / "runs" / "tiny"
    for staged in (".activations.zarr.partial", ".projections.zarr.partial"):
        killed = subprocess.run([sys.executable, "-c", _KILL_INSIDE_A_CHUNK_WRITE, staged, "5"],
                                cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        left = list((run / staged).rglob("*.partial"))
        assert left, f"the kill left no temporary chunk file in {staged}"
    result = run_cli("run", "deconv", "-w", "workflows/tiny.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    states = _states(tmp_path)
    assert [states[name] for name in ("prepare", "train", "activations", "rank", "deconv")] == \
        ["done"] * 5
    for name in ("activations.zarr", "projections.zarr"):
        ours, reference = _store_files(run / name), _store_files(tiny_run / "runs" / "tiny" / name)
        assert not [path for path in ours if path.endswith(".partial")], name
        assert sorted(ours) == sorted(reference), name
        differing = [path for path in ours if ours[path] != reference[path]]
        assert not differing, (name, differing[:5])
