"""The notebook API reads a finished run as DataFrames and dask arrays."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from pipeline.api import open_run
from pipeline.errors import UserError


def test_open_run_gives_tables_and_lazy_activations(tiny_run):
    run = open_run(tiny_run / "workflows" / "tiny.toml", base=tiny_run)
    assert set(run.status()["state"]) == {"done"}
    assert run.layers == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert len(run.units) == 176 and {"q99", "class_entropy", "top_class"} <= set(run.units)
    maxes = run.activations("conv3")
    assert isinstance(maxes, da.Array) and maxes.shape == (len(run.manifest), 48)
    stored = zarr.open_group(run.layout.activations, mode="r")["conv3/max"][:]
    np.testing.assert_array_equal(maxes.compute(), stored)
    live = run.units[~run.units["dead"]].iloc[0]
    top = run.top_images(live["layer"], int(live["unit"]))
    assert list(top["rank"]) == list(range(len(top))) and len(top) == live["n_top"]
    assert run.top_k == 9 and len(top) <= run.top_k
    assert top["value"].iloc[0] == pytest.approx(live["peak"])
    assert (top["class_name"] == run.classes.set_index("label").loc[top["label"], "name"]
            .to_numpy()).all()
    counts = run.selectivity.query("layer == @live.layer and unit == @live.unit")["count"]
    assert counts.sum() == live["n_selectivity"]
    from pipeline import catalog

    assert run.path("topk") == run.path(catalog.TOPK) == tiny_run / "runs" / "tiny" / \
        "topk.parquet"


def test_missing_outputs_name_the_file_and_the_command(tmp_path, write_workflow):
    from support import TINY_DEMO

    run = open_run(write_workflow(TINY_DEMO), base=tmp_path)
    with pytest.raises(UserError, match=r"units\.parquet.*run rank"):
        _ = run.units
    with pytest.raises(UserError, match=r"topk\.parquet.*run rank"):
        _ = run.top_k
    with pytest.raises(UserError, match=r"activations\.zarr.*run activations"):
        run.activations("conv1")
