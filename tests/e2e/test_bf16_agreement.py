"""With ``[activations] bf16`` (here the CPU's bfloat16 autocast), rank and deconv agree: the
ranked images, values and positions are those of the float32 maps (issue 26)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from support import TINY_DEMO_UNPINNED, pin_device, run_cli

from pipeline.ranking import rank_store

pytestmark = pytest.mark.slow  # runs the pipeline in a subprocess

def _workflow(bf16: str) -> str:
    """The reduced demo with ``[activations] bf16`` set, projecting with the deconvnet only."""
    text = TINY_DEMO_UNPINNED.replace("[activations]\n", f"[activations]\nbf16 = {bf16}\n")
    return pin_device(text.replace('methods = ["deconvnet", "guided", "gradient"]',
                                   'methods = ["deconvnet"]'))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bf16")
    (base / "workflows").mkdir()
    for name, bf16 in (("half", "true"), ("full", "false")):
        (base / "workflows" / f"{name}.toml").write_text(_workflow(bf16))
    for name, target in (("half", "deconv"), ("full", "rank")):
        result = run_cli("run", target, "-w", f"workflows/{name}.toml", cwd=base)
        assert result.returncode == 0, result.stderr[-3000:]
    return base / "runs"


def test_bf16_ranks_what_float32_ranks(runs: Path):
    """The same weights, images and ranks as a float32 run: equal images and positions, values
    equal within float32 rounding, though the bfloat16 store's own values differ."""
    half, full = (pd.read_parquet(runs / name / "topk.parquet") for name in ("half", "full"))
    both = half.merge(full, on=["layer", "unit", "rank"], suffixes=("_half", "_full"),
                      validate="one_to_one")
    assert len(both) == len(half) == len(full) > 500
    assert (both["image_id_half"] == both["image_id_full"]).all()
    assert ((both["y_half"] == both["y_full"]) & (both["x_half"] == both["x_full"])).all()
    np.testing.assert_allclose(both["value_half"], both["value_full"], rtol=1e-5)
    # what the test is about: the store's bfloat16 maxima rank other values (and positions)
    raw = rank_store(runs / "half" / "activations.zarr", 9).topk
    raw = raw.merge(full, on=["layer", "unit", "rank"], suffixes=("_raw", "_full"))
    assert (np.abs(raw["value_raw"] - raw["value_full"]) > 1e-4 * raw["value_full"]).mean() > 0.5
    stored, exact = (zarr.open_group(runs / name / "activations.zarr", mode="r")
                     for name in ("half", "full"))
    assert (stored["conv1"]["argmax"][:] != exact["conv1"]["argmax"][:]).any()


def test_deconv_projects_at_the_peak_of_the_float32_map(runs: Path):
    """Each row's value and position are the maximum of the map deconv computes in float32."""
    topk = pd.read_parquet(runs / "half" / "topk.parquet")
    store = zarr.open_group(runs / "half" / "projections.zarr", mode="r")
    for layer, rows in topk.groupby("layer"):
        maps = store[layer]["maps"][:]
        picked = maps[rows["unit"].to_numpy(), rows["rank"].to_numpy()]
        flat = picked.reshape(len(picked), -1)
        peak = np.unravel_index(flat.argmax(axis=1), picked.shape[1:])
        np.testing.assert_array_equal(peak[0], rows["y"].to_numpy())
        np.testing.assert_array_equal(peak[1], rows["x"].to_numpy())
        np.testing.assert_allclose(flat.max(axis=1), rows["value"].to_numpy(), rtol=1e-5)


def test_status_and_stamps_say_what_ran(runs: Path):
    result = run_cli("status", "-w", "workflows/half.toml", cwd=runs.parent)
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("activations"))
    assert line.rstrip().endswith("cpu, float32, bf16 autocast")
    rank = next(row for row in result.stdout.splitlines() if row.startswith("rank "))
    assert rank.rstrip().endswith("cpu, float32")  # the re-check ran in float32
