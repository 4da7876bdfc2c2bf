"""A killed activations stage resumes to the same bytes; two shard processes equal one run."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from support import (
    REPO,
    cli_argv,
    folder_workflow,
    run_cli,
    save_random_checkpoint,
    store_arrays,
    write_images,
)

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    write_images(data, CLASSES, per_class=40, size=72)
    checkpoint = save_random_checkpoint(tmp_path / "model.pt", num_classes=len(CLASSES))
    return data, checkpoint


def _prepared(tmp_path, name, text):
    base = tmp_path / name
    (base / "workflows").mkdir(parents=True)
    (base / "workflows" / "w.toml").write_text(text)
    result = run_cli("run", "prepare", "-w", "workflows/w.toml", cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    return base


def _popen(base, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cli_argv("run", "activations", "-w", "workflows/w.toml", *args,
                                     cwd=base), cwd=base, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reference(tmp_path, text):
    base = _prepared(tmp_path, "reference", text)
    result = run_cli("run", "activations", "-w", "workflows/w.toml", cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    return store_arrays(base / "runs" / "w" / "activations.zarr")


def _assert_equal_stores(expected, actual):
    assert expected.keys() == actual.keys()
    for key in expected:
        assert np.array_equal(expected[key], actual[key], equal_nan=True), key


def test_sigkill_mid_stage_resumes_to_identical_arrays(tmp_path, setup):
    text = folder_workflow(*setup, chunk_size=4, batch_size=2)
    expected = _reference(tmp_path, text)
    base = _prepared(tmp_path, "killed", text)
    markers = base / "runs" / "w" / ".activations.zarr.partial" / "done"
    process = _popen(base)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if markers.is_dir() and len(list(markers.glob("*.json"))) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the stage ended before it could be killed"
    written = len(list(markers.glob("*.json")))
    assert 3 <= written < 40
    status = run_cli("status", "-w", "workflows/w.toml", cwd=base).stdout
    assert "activations  missing" in status

    resumed = run_cli("run", "activations", "-w", "workflows/w.toml", cwd=base)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming: {written} of 40 chunks" in resumed.stdout
    _assert_equal_stores(expected, store_arrays(base / "runs" / "w" / "activations.zarr"))


def test_two_shard_processes_equal_a_single_run(tmp_path, setup):
    text = folder_workflow(*setup, chunk_size=8, batch_size=4)
    expected = _reference(tmp_path, text)
    base = _prepared(tmp_path, "sharded", text)
    shards = [_popen(base, "--shard", f"{i}/2") for i in range(2)]
    outputs = [shard.communicate(timeout=300) for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], outputs
    assert sum("left to the other shards" in out for out, _ in outputs) <= 1
    _assert_equal_stores(expected, store_arrays(base / "runs" / "w" / "activations.zarr"))
    status = run_cli("status", "-w", "workflows/w.toml", cwd=base).stdout
    assert "activations  done" in status


def test_shard_needs_its_inputs_done_and_only_splits_activations(tmp_path, setup):
    base = tmp_path / "fresh"
    (base / "workflows").mkdir(parents=True)
    (base / "workflows" / "w.toml").write_text(folder_workflow(*setup))
    result = run_cli("run", "activations", "-w", "workflows/w.toml", "--shard", "0/2", cwd=base)
    assert result.returncode == 2 and "prepare must be done" in result.stderr
    result = run_cli("run", "rank", "-w", "workflows/w.toml", "--shard", "0/2", cwd=base)
    assert result.returncode == 2 and "activations stage only" in result.stderr
    result = run_cli("run", "activations", "-w", "workflows/w.toml", "--shard", "2/2", cwd=base)
    assert result.returncode == 2 and "0 <= I < N" in result.stderr
