"""What the atlas reads: the tables as figures, the sentence per layer, the randomised store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.interp.projection_store import LayerPlan
from pipeline.interp.receptive_field import ReceptiveField
from pipeline.sanity import RandomisedProjections, read_sanity, reading
from pipeline.sanity.inputs import INPUT_COLUMNS
from pipeline.sanity.sanity_run import CASCADE_COLUMNS, CascadeResult
from pipeline.sanity.store import SanityMeta, write_randomised, write_tables


def _cascade_rows() -> pd.DataFrame:
    rows = []
    for layer, full_values in (("conv1", (0.05, 0.02)), ("conv2", (0.91, 0.85)),
                               ("conv3", (0.45, 0.2))):
        for method in ("deconvnet", "gradient"):
            for step, down_to, label, full in ((1, "c3", "conv3", False),
                                               (2, "c2", "conv2", False),
                                               (3, "c1", "conv1", True)):
                spearman, ssim = full_values if full else (1.0, 1.0)
                rows.append((layer, method, step, down_to, label, full, spearman, 0.1, ssim,
                             0.1, 48, 0))
    rows.append(("conv4", "deconvnet", 1, "c1", "", True, float("nan"), float("nan"),
                 float("nan"), float("nan"), 0, 48))
    return pd.DataFrame(rows, columns=list(CASCADE_COLUMNS))


@pytest.fixture
def figures(tmp_path):
    inputs = pd.DataFrame([("conv1", "deconvnet", 0.98, 0.01, 0.1, 0.05, 16)],
                          columns=list(INPUT_COLUMNS))
    write_tables(_cascade_rows(), tmp_path / "sanity.parquet", inputs,
                 tmp_path / "input_dependence.parquet")
    return read_sanity(tmp_path / "sanity.parquet", tmp_path / "input_dependence.parquet")


def test_the_tables_read_back_as_headline_cascade_and_input_figures(figures):
    assert figures.layers == ("conv1", "conv2", "conv3", "conv4")
    assert figures.methods == ("deconvnet", "gradient")
    headline = figures.headline[("conv2", "deconvnet")]
    assert (headline.spearman, headline.ssim, headline.n) == (0.91, 0.85, 48)
    points = figures.cascade[("conv2", "gradient")]
    assert [(p.step, p.randomised_from, p.full) for p in points] == [
        (1, "c3", False), (2, "c2", False), (3, "c1", True)]
    assert figures.inputs[("conv1", "deconvnet")].between_projections == 0.98


def test_one_sentence_per_layer_and_method_by_documented_thresholds(figures):
    assert reading("conv2", figures) == (
        "conv2: deconvnet projections barely change when the weights are randomised "
        "(Spearman 0.91, SSIM 0.85): they show the architecture more than what was learned.")
    assert reading("conv1", figures, "gradient") == (
        "conv1: gradient projections change completely when the weights are randomised "
        "(Spearman 0.05, SSIM 0.02): they depend on the learned weights (necessary, not "
        "sufficient, for showing what the network learned).")
    assert "change in part" in reading("conv3", figures)
    assert "come out empty" in reading("conv4", figures)
    assert "no sanity check" in reading("conv9", figures)
    for layer in figures.layers:
        sentence = reading(layer, figures)
        assert sentence.count(". ") == 0 and sentence.endswith(".")


def test_the_randomised_store_gives_each_units_projection_back(tmp_path):
    field = ReceptiveField(size=(5, 5), jump=(1, 1), first=(-2, -2))
    layers = [LayerPlan("conv1", "features.relu1", 3, (8, 8), field),
              LayerPlan("conv2", "features.relu2", 2, (8, 8), field)]
    projection = np.random.default_rng(0).normal(size=(5, 5, 3))
    peak = np.abs(projection).max()
    result = CascadeResult(pd.DataFrame(), randomised={"conv1": {
        "projections": np.zeros((2, 3, 5, 5, 3), np.float16),
        "projection_scale": np.zeros((2, 3), np.float32),
        "image_id": np.array([4, -1, 7])}})
    result.randomised["conv1"]["projections"][1, 2] = projection / peak
    result.randomised["conv1"]["projection_scale"][1, 2] = peak
    meta = SanityMeta(("deconvnet", "guided"), 0, 8, ("c2", "c1"))
    write_randomised(tmp_path / "sanity.zarr", result, layers, meta, channels=3)
    store = RandomisedProjections(tmp_path / "sanity.zarr")
    assert store.meta == meta and store.layers == ("conv1", "conv2")
    assert np.allclose(store.projection("conv1", "guided", 2), projection, atol=2e-3 * peak)
    assert store.projection("conv1", "guided", 1) is None  # dead
    assert store.image_id("conv1", 0) == 4
    assert store.projection("conv2", "deconvnet", 0) is None  # no live unit: zeros, -1
    assert store.projection("conv1", "gradient", 0) is None  # not computed
