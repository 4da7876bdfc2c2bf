"""The render stage in worker processes (pipeline.atlas.parallel): the same atlas, byte for
byte, as a render in one process; a worker's error reaches the stage as the worker raised it;
no worker outlives the render."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import REPO

from pipeline.atlas.gather import LayerInput, gather_layers
from pipeline.atlas.parallel import MAX_DEFAULT_WORKERS, Workers, _cgroup_cpus, worker_count
from pipeline.config import load_workflow
from pipeline.layout import RunLayout
from pipeline.stages import get_stage
from pipeline.stages.context import StageContext


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """The finished tiny run's workflow and run folder, without its atlas."""
    base = tmp_path / "base"
    shutil.copytree(tiny_run / "workflows", base / "workflows")
    shutil.copytree(tiny_run / "runs", base / "runs", symlinks=True)
    return base


def _render(base: Path, workers: int, target: Path) -> dict[str, bytes]:
    """Run the render stage with ``[render] workers``; move its atlas to ``target`` and return
    every file's bytes by relative path."""
    workflow = load_workflow(base / "workflows" / "tiny.toml")
    workflow = dataclasses.replace(workflow, render=dataclasses.replace(workflow.render,
                                                                        workers=workers))
    layout = RunLayout(base, workflow.name)
    get_stage("render").func(StageContext(workflow, layout, get_stage("render"),
                                          key=f"workers-{workers}"))
    shutil.move(layout.staging(layout.report_dir), target)
    return {path.relative_to(target).as_posix(): path.read_bytes()
            for path in sorted(target.rglob("*")) if path.is_file()}


def test_workers_write_the_same_atlas_as_one_process(run_copy, tmp_path):
    serial = _render(run_copy, 1, tmp_path / "serial")
    parallel = _render(run_copy, 3, tmp_path / "parallel")
    assert len(serial) > 500  # tiles, sheets, the unit pages of 176 units, the experiments'
    assert sorted(parallel) == sorted(serial)
    differing = [path for path in serial if parallel[path] != serial[path]]
    assert not differing, f"{len(differing)} files differ, e.g. {differing[:5]}"
    assert not multiprocessing.active_children()  # the workers ended with the stage


def _layers(base: Path) -> tuple[list[LayerInput], object, Path]:
    import zarr

    from pipeline.atlas.render_run import RunFiles, read_run_tables
    from pipeline.inference.store import store_layers

    layout = RunLayout(base, "tiny")
    activations = zarr.open_group(layout.activations, mode="r")
    inputs = [LayerInput(meta.label, meta) for meta in store_layers(activations)]
    files = RunFiles(**{field: getattr(layout, field) for field in RunFiles.__dataclass_fields__})
    return inputs, read_run_tables(files, activations), layout.projections


@pytest.mark.parametrize("workers", [1, 3])
def test_an_error_in_a_worker_is_raised_as_the_worker_raised_it(run_copy, tmp_path, workers):
    inputs, tables, projections = _layers(run_copy)
    out = tmp_path / "atlas"
    (out / "tiles").mkdir(parents=True)
    (out / "tiles" / "conv4").write_text("a file where the layer's folder goes")
    with pytest.raises(FileExistsError) as error, Workers(workers) as pool:
        gather_layers(inputs, tables, projections, out, 9, 64, pool)
    assert error.value.filename == str(out / "tiles" / "conv4")
    assert "File exists" in str(error.value)
    assert not multiprocessing.active_children()  # so nothing is written after the error


_KILLED_PARENT = """
import os, sys, time
from pipeline.atlas.parallel import Workers

def wait(shared, task):
    # one write of the whole line: two workers' print()s could interleave on the pipe
    os.write(sys.stdout.fileno(), f"{os.getpid()}\\n".encode())
    time.sleep(60)

if __name__ == "__main__":
    with Workers(2) as workers:
        workers.map(wait, [0, 1], None)
"""


def test_workers_end_with_a_killed_render(tmp_path):
    """A worker that outlived a killed render would go on writing into the atlas folder that
    the rerun starts again."""
    script = tmp_path / "killed_parent.py"
    script.write_text(textwrap.dedent(_KILLED_PARENT), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])}
    parent = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        workers = [int(parent.stdout.readline()) for _ in range(2)]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if _alive(pid)]
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a dead child of no one we wait for is a zombie until its new parent reaps it
    status = Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split(")")[-1].split()[0] != "Z"


def test_zero_workers_is_one_per_usable_core():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert worker_count(0) == min(cores, _cgroup_cpus() or cores, MAX_DEFAULT_WORKERS)
    assert worker_count(3) == 3


def test_a_containers_cpu_quota_is_read_rounded_up(tmp_path):
    quota = tmp_path / "cpu.max"
    for text, cpus in (("150000 100000\n", 2), ("800000 100000\n", 8), ("max 100000\n", None),
                       ("garbage", None)):
        quota.write_text(text)
        assert _cgroup_cpus(quota) == cpus
    assert _cgroup_cpus(tmp_path / "absent") is None
    assert 1 <= worker_count(0) <= MAX_DEFAULT_WORKERS
