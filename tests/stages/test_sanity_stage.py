"""The sanity stage as a user runs it: on by default, stamped, in status, atomic, off on request.

Each test works on a copy of a finished run of the reduced demo (TINY_DEMO), whose `run all`
ran the stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from support import run_cli, tiny_demo

from pipeline.atomic import read_json
from pipeline.layout import RunLayout
from pipeline.sanity import RandomisedProjections, read_sanity, reading

pytestmark = pytest.mark.slow


@pytest.fixture
def finished(tiny_run: Path, tmp_path: Path) -> Path:
    base = tmp_path / "base"
    shutil.copytree(tiny_run, base, symlinks=True)
    return base


def _states(base: Path, workflow: str = "workflows/tiny.toml") -> dict[str, str]:
    result = run_cli("status", "-w", workflow, cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[2:]
            if len(line.split()) > 1 and line.split()[1] in ("done", "stale", "missing", "off")}


def test_run_all_writes_the_figures_the_atlas_reads(finished):
    layout = RunLayout(finished, "tiny")
    assert _states(finished)["sanity"] == "done"
    stamp = read_json(layout.stamp("sanity"))
    assert stamp["outputs"] == ["runs/tiny/sanity.parquet",
                                "runs/tiny/input_dependence.parquet", "runs/tiny/sanity.zarr"]
    figures = read_sanity(layout.sanity, layout.input_dependence)
    labels = ("conv1", "conv2", "conv3", "conv4", "conv5")
    methods = ("deconvnet", "guided", "gradient")
    assert figures.layers == labels and figures.methods == methods
    table = pd.read_parquet(layout.sanity)
    assert len(table) == len(labels) * len(methods) * 5  # a step per analysed layer
    assert set(figures.inputs) == set(figures.headline) == {(layer, method)
                                                            for layer in labels
                                                            for method in methods}
    for layer in labels:
        assert reading(layer, figures).startswith(f"{layer}: deconvnet projections ")
    # first-layer pictures are their filters: new weights, other pictures
    assert abs(figures.headline[("conv1", "deconvnet")].spearman) < 0.5
    assert figures.inputs[("conv1", "deconvnet")].between_projections > 0.9
    # trained beside randomised: the same crop as projections.zarr, for every live unit
    store = RandomisedProjections(layout.randomised_projections)
    projections = zarr.open_group(layout.projections, mode="r")
    for layer in labels:
        trained = projections[layer]["projections"]
        live = np.flatnonzero(np.asarray(projections[layer]["image_id"][:, 0]) >= 0)
        for unit in live[:3]:
            randomised = store.projection(layer, "deconvnet", int(unit))
            assert randomised is not None and randomised.shape == trained.shape[3:]
            assert store.image_id(layer, int(unit)) == projections[layer]["image_id"][unit, 0]


def test_only_what_changes_the_figures_makes_it_stale_and_off_turns_it_off(finished):
    workflow = finished / "workflows" / "tiny.toml"
    # the finished run's [sanity] device is "cpu": "cpu:0" is another value, the same device
    workflow.write_text(tiny_demo('[sanity]\nbatch_size = 7\ndevice = "cpu:0"\n'))
    assert _states(finished)["sanity"] == "done"
    workflow.write_text(tiny_demo("[sanity]\nseed = 1\n"))
    states = _states(finished)
    assert states["sanity"] == "stale" and states["deconv"] == "done"
    workflow.write_text(tiny_demo("[sanity]\nenabled = false\n"))
    assert _states(finished)["sanity"] == "off"
    result = run_cli("run", "all", "-w", "workflows/tiny.toml", cwd=finished)
    assert result.returncode == 0 and "[sanity]" not in result.stdout


def test_a_killed_run_is_never_taken_for_done(finished):
    """What a killed run left (a staged table, no stamp) is redone, never moved into place."""
    layout = RunLayout(finished, "tiny")
    before = pd.read_parquet(layout.sanity)
    layout.stamp("sanity").unlink()
    layout.sanity.unlink()
    staged = layout.staging(layout.sanity)
    staged.write_bytes(b"half a parquet file")
    assert _states(finished)["sanity"] == "missing"
    result = run_cli("run", "sanity", "-w", "workflows/tiny.toml", cwd=finished)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[sanity] running" in result.stdout and not staged.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(layout.sanity), before)
    assert _states(finished)["sanity"] == "done"
