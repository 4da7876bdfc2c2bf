"""A deconv stage killed with SIGKILL continues after the last block it wrote: the blocks
finished before the kill are not projected again, and the finished store equals that of a run
that was never interrupted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from support import REPO, cli_argv, run_cli

from pipeline.atomic import read_json

pytestmark = pytest.mark.slow

ARRAYS = ("projections", "projection_scale", "patches", "boxes", "thumbs", "maps")


def _copy(tiny_run: Path, target: Path) -> Path:
    shutil.copytree(tiny_run, target, ignore=shutil.ignore_patterns("reports"))
    return target


def _kill_after_first_block(base: Path) -> dict:
    """Start ``run deconv``, SIGKILL it once a block is recorded; the progress then."""
    progress = base / "runs" / "tiny" / ".projections.zarr.partial" / "progress"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(cli_argv("run", "deconv", "-w", "workflows/tiny.toml", cwd=base),
                               cwd=base, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if progress.is_dir() and any(progress.glob("*.json")):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return {path.stem: read_json(path)["units"] for path in progress.glob("*.json")}
        time.sleep(0.005)
    pytest.fail(f"deconv finished or failed before any block was recorded "
                f"(exit {process.poll()})")


def _chunk_times(store: Path, label: str, units: int) -> dict[str, int]:
    """Modification times of the chunk files of the first ``units`` units of layer ``label``."""
    times = {}
    for name in ("patches", "maps", "thumbs"):
        for unit in range(units):  # chunk files c.<unit>.0.0... side by side (FLAT_KEYS)
            chunks = (store / label / name).glob(f"c.{unit}.*")
            times.update({str(path): path.stat().st_mtime_ns for path in chunks
                          if path.is_file()})
    return times


def test_killed_deconv_resumes_after_its_last_block(tiny_run, tmp_path):
    reference = _copy(tiny_run, tmp_path / "reference")
    result = run_cli("run", "deconv", "-w", "workflows/tiny.toml", cwd=reference)
    assert result.returncode == 0, result.stderr[-2000:]

    killed = _copy(tiny_run, tmp_path / "killed")
    written = _kill_after_first_block(killed)
    assert written and all(units > 0 for units in written.values())
    staged = killed / "runs" / "tiny" / ".projections.zarr.partial"
    assert (staged / "decoded" / "index.json").is_file()  # decoding had finished
    before = {label: _chunk_times(staged, label, units) for label, units in written.items()}
    assert all(before.values())

    result = run_cli("run", "deconv", "-w", "workflows/tiny.toml", cwd=killed)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[deconv] resuming:" in result.stdout
    assert "[deconv] reusing the" in result.stdout  # decoded once per stage, kill or not
    final = killed / "runs" / "tiny" / "projections.zarr"
    for label, times in before.items():  # the blocks written before the kill were kept
        after = _chunk_times(final, label, written[label])
        assert after == {path.replace(str(staged), str(final)): t for path, t in times.items()}
    assert not (final / "progress").exists() and not (final / "decoded").exists()

    expected = zarr.open_group(reference / "runs" / "tiny" / "projections.zarr", mode="r")
    resumed = zarr.open_group(final, mode="r")
    assert dict(resumed.attrs) == dict(expected.attrs)
    for label in expected.group_keys():
        assert dict(resumed[label].attrs) == dict(expected[label].attrs)
        for name in ARRAYS:
            np.testing.assert_array_equal(resumed[label][name][:], expected[label][name][:],
                                          err_msg=f"{label}/{name}")


def test_a_top_image_unreadable_since_activations_is_left_blank_and_said(tiny_run, tmp_path):
    import pandas as pd

    base = _copy(tiny_run, tmp_path / "changed")
    run = base / "runs" / "tiny"
    topk = pd.read_parquet(run / "topk.parquet")
    image_id = int(topk["image_id"].value_counts().index[0])  # the top image of most units
    path = pd.read_parquet(run / "manifest.parquet")["path"].iat[image_id]
    data = run / "data" / "val" / path  # the demo's generated images
    data.write_bytes(data.read_bytes()[:100])
    result = run_cli("run", "deconv", "-w", "workflows/tiny.toml", cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    n_images = topk["image_id"].nunique()
    assert f"[deconv] warning: 1 of {n_images} top images cannot be read now, e.g. {path}" \
        in result.stdout
    store = zarr.open_group(run / "projections.zarr", mode="r")
    rows = topk[topk["image_id"] == image_id]
    for row in rows.itertuples(index=False):
        assert (store[row.layer]["boxes"][row.unit, row.rank] == -1).all()
        assert not store[row.layer]["projections"][:, row.unit, row.rank].any()
    others = topk[topk["image_id"] != image_id].iloc[0]
    assert (store[others["layer"]]["boxes"][others["unit"], others["rank"]] >= 0).all()
