"""The dask-aware stages on a real two-worker LocalCluster give the local run's results exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import pin_device, run_cli, store_arrays

from pipeline.config import load_workflow
from pipeline.layout import RunLayout
from pipeline.runner import Runner

TABLES = ("topk", "units", "selectivity", "histograms")


def copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished tiny run (stamps stay valid: they hold no paths)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run", symlinks=True))


def test_rank_on_a_cluster_equals_the_local_scheduler(tiny_run, tmp_path, cluster):
    from distributed import Client, get_task_stream

    base = copy_run(tiny_run, tmp_path)
    workflow = load_workflow(base / "workflows" / "tiny.toml")
    layout = RunLayout(base=base, workflow=workflow.name)
    local = {name: pd.read_parquet(getattr(layout, name)) for name in TABLES}
    with Client(cluster) as client, get_task_stream(client) as stream:
        assert Runner(workflow, layout, client).run("rank") == ["rank"]
    ran = {task["key"][0] if isinstance(task["key"], tuple) else task["key"]
           for task in stream.data}
    assert any(key.startswith("block_partial") for key in ran), ran  # blocks ran on the workers
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(getattr(layout, name)), local[name])
    assert len(local["topk"]) > 0 and local["units"]["dead"].any()


@pytest.mark.slow
def test_activations_as_shard_tasks_equal_a_local_run_bitwise(tiny_run, tmp_path, cluster):
    base = copy_run(tiny_run, tmp_path)
    store = base / "runs" / "tiny" / "activations.zarr"
    reference = store_arrays(store)
    shutil.rmtree(store)
    # DataLoader workers asked for: dask's default (daemon) workers cannot start them, so the
    # task must decode in its own process rather than fail.
    workflow = base / "workflows" / "tiny.toml"
    workflow.write_text(workflow.read_text().replace("[activations]\n",
                                                     "[activations]\nnum_workers = 2\n"))
    result = run_cli("run", "activations", "-w", "workflows/tiny.toml", "--scheduler",
                     cluster.scheduler_address, cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 shard tasks on" in result.stdout
    reports = [line for line in result.stdout.splitlines() if "images/s on" in line]
    assert len(reports) == 2, result.stdout  # both workers computed a share
    computed = store_arrays(store)
    assert computed.keys() == reference.keys()
    for key, expected in reference.items():
        np.testing.assert_array_equal(computed[key], expected, err_msg=key, strict=True)
    status = run_cli("status", "-w", "workflows/tiny.toml", cwd=base)
    assert "activations  done" in status.stdout, status.stdout


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_line_and_exit_2(tiny_run, tmp_path):
    base = copy_run(tiny_run, tmp_path)
    result = run_cli("run", "rank", "-w", "workflows/tiny.toml", "--scheduler",
                     "tcp://127.0.0.1:9", cwd=base)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "tcp://127.0.0.1:9" in result.stderr
    assert "dask scheduler" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("option", ["gpu = true"])
def test_asking_for_gpus_on_a_cluster_without_them_is_refused(tiny_run, tmp_path, cluster,
                                                               option):
    base = copy_run(tiny_run, tmp_path)
    workflow = base / "workflows" / "tiny.toml"
    workflow.write_text(workflow.read_text() + f"\n[dask]\n{option}\n")
    before = sorted(p.name for p in (base / "runs" / "tiny").iterdir())
    result = run_cli("run", "activations", "-w", "workflows/tiny.toml", "--scheduler",
                     cluster.scheduler_address, cwd=base)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--resources GPU=1" in result.stderr and result.stderr.count("\n") == 1
    assert "activations.zarr" in before


@pytest.mark.slow
def test_a_scheduler_without_workers_is_refused_not_waited_on(tiny_run, tmp_path):
    from distributed import LocalCluster

    base = copy_run(tiny_run, tmp_path)
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as empty:
        result = run_cli("run", "rank", "-w", "workflows/tiny.toml", "--scheduler",
                         empty.scheduler_address, cwd=base, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "has no workers" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_model_file_of_the_users_is_built_the_same_by_shards_and_workers(tmp_path, cluster):
    """``[model] factory`` names a file relative to the run's folder: the dask workers (started
    elsewhere) and ``--shard`` processes import it and fill the store a local run fills."""
    import torch
    from support import OWN_MODEL_FILE as MODEL_FILE
    from support import write_images

    write_images(tmp_path / "images", ["cat", "dog"], per_class=4, size=40)
    (tmp_path / "my_models.py").write_text(MODEL_FILE)
    namespace: dict = {}
    exec(MODEL_FILE, namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"](2, width=6).state_dict(), tmp_path / "weights.pt")
    (tmp_path / "own.toml").write_text(pin_device(
        '[data]\nroot = "images"\n[model]\nfactory = "my_models.py:build"\n'
        'checkpoint = "weights.pt"\nimage_size = 32\n[model.factory_args]\nwidth = 6\n'
        '[activations]\nchunk_size = 4\nbatch_size = 4\n'))
    store = tmp_path / "runs" / "own" / "activations.zarr"
    assert run_cli("run", "activations", "-w", "own.toml", cwd=tmp_path).returncode == 0
    reference = store_arrays(store)
    shutil.rmtree(store)
    for shard in ("0/2", "1/2"):  # two processes, one share each
        result = run_cli("run", "activations", "-w", "own.toml", "--shard", shard,
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    sharded = store_arrays(store)
    shutil.rmtree(store)
    result = run_cli("run", "activations", "-w", "own.toml", "--scheduler",
                     cluster.scheduler_address, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 shard tasks on" in result.stdout
    assert sharded.keys() == reference.keys()
    for key, expected in reference.items():
        np.testing.assert_array_equal(sharded[key], expected, err_msg=key, strict=True)
    # The workers run torch on one thread (distributed sets OMP_NUM_THREADS=1), whose
    # convolutions sum in another order: values agree to float32 rounding, positions exactly.
    on_cluster = store_arrays(store)
    assert on_cluster.keys() == reference.keys()
    for key, expected in reference.items():
        if np.issubdtype(expected.dtype, np.floating):
            np.testing.assert_allclose(on_cluster[key], expected, rtol=1e-6, atol=1e-7,
                                       err_msg=key)
        else:
            np.testing.assert_array_equal(on_cluster[key], expected, err_msg=key, strict=True)
