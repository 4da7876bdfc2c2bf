"""``featurevis.zarr`` as the stage writes it: its layout, the same bytes for the same seed,
and a run killed mid-layer that continues at the next block with the bytes of an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from fv_job import BATCH, LAYERS, SIZE, write
from support import REPO, store_arrays

from pipeline.featurevis.meta import FeatureVisLayer, FeatureVisMeta
from pipeline.labelled import array_in, group_in

JOB = Path(__file__).with_name("fv_job.py")


def test_the_store_holds_every_units_images_and_what_they_reach(tmp_path, capsys):
    store = tmp_path / "featurevis.zarr"
    write(store)
    root = zarr.open_group(store, mode="r")
    meta = FeatureVisMeta.from_attrs(root.attrs)
    assert meta.objectives == ("mean", "centre") and meta.steps == 16 and "plan" not in root.attrs
    assert not (store / "progress").exists()
    for label, _, n in LAYERS:
        group = group_in(root, label)
        layer = FeatureVisLayer.from_attrs(group.attrs)
        assert list(array_in(group, "unit")[...]) == list(range(n))
        assert array_in(group, "images").shape == (n, SIZE, SIZE, 3)
        assert array_in(group, "centre").shape == (n, layer.side, layer.side, 3)
        # the field and a margin for the shifts (or the whole input when that is smaller)
        assert layer.side == SIZE or layer.side > max(layer.receptive_field)
        assert array_in(group, "images").metadata.dimension_names == ("unit", "y", "x", "channel")
    driven = array_in(group_in(root, "conv2"), "driven")[...]
    assert list(np.flatnonzero(~driven.any(axis=0))) == [4]  # the dead unit, by both objectives
    assert driven[:, [0, 1, 2, 3, 5]].all()
    said = capsys.readouterr().out
    assert "conv2: " in said and "1 not raised by either objective in 16 steps (unit 4)" in said


def test_the_same_seed_writes_the_same_bytes(tmp_path):
    write(tmp_path / "a.zarr", steps=8)
    write(tmp_path / "b.zarr", steps=8)
    write(tmp_path / "c.zarr", steps=8, seed=1)
    a, b, c = (store_arrays(tmp_path / f"{name}.zarr") for name in "abc")
    assert a.keys() == b.keys()
    assert all(a[key].tobytes() == b[key].tobytes() for key in a)
    assert a["conv2/images"].tobytes() != c["conv2/images"].tobytes()


@pytest.mark.slow  # a job in a subprocess, killed
def test_a_killed_run_continues_at_the_next_block_with_the_same_bytes(tmp_path, capsys):
    steps = 160  # long enough that the kill lands mid-way through the second layer's blocks
    uninterrupted = tmp_path / "whole.zarr"
    write(uninterrupted, steps)
    store = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(JOB.parent),
                                                        str(REPO / "tests")])}
    job = subprocess.Popen([sys.executable, str(JOB), str(store), str(steps)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = store / "progress" / "conv2.json"
    deadline = time.monotonic() + 300
    while not record.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert record.exists(), "the job finished or stalled before its first conv2 block"
    written = int(json.loads(record.read_text())["units"])
    assert BATCH <= written < 6  # killed with blocks of conv2 still to do
    capsys.readouterr()
    write(store, steps)  # the rerun continues
    assert f"resuming: {8 + written} of 14 units already optimised" in capsys.readouterr().out
    whole, resumed = store_arrays(uninterrupted), store_arrays(store)
    assert whole.keys() == resumed.keys()
    assert all(whole[key].tobytes() == resumed[key].tobytes() for key in whole)
