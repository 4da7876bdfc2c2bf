"""Reading a run for the comparison: statistics from a real zarr store and units table, and the
facts that name a run's weights and data without a local folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from pipeline.atlas.render_run import dataset_name
from pipeline.compare.gather import layer_stats, mean_activations, weights_origin
from pipeline.config import load_workflow


@pytest.fixture
def store(tmp_path):
    """Five images (the fourth unreadable) and a layer of three units; chunks of two images."""
    root = zarr.open_group(tmp_path / "activations.zarr", mode="w")
    pred = np.zeros((5, 5), np.int32)
    pred[3] = -1
    root.create_array("pred", shape=pred.shape, chunks=(2, 5), dtype="int32")[:] = pred
    means = np.array([[1, 0, 2], [3, 0, 2], [5, 0, 2], [100, 100, 100], [7, 0, 2]], np.float32)
    layer = root.create_group("conv1")
    layer.attrs["module"] = "features.relu1"
    layer.create_array("mean", shape=means.shape, chunks=(2, 3), dtype="float32")[:] = means
    return zarr.open_group(tmp_path / "activations.zarr", mode="r")


def test_mean_activation_is_over_readable_images_only(store):
    np.testing.assert_allclose(mean_activations(store, "conv1"), [4.0, 0.0, 2.0])


def test_layer_statistics_are_over_live_units(store):
    units = pd.DataFrame({
        "layer": ["conv1"] * 3 + ["conv2"], "unit": [0, 1, 2, 0],
        "dead": [False, True, False, False], "top_class_share": [0.5, 0.0, 0.3, 0.9],
        "peak": [8.0, 0.0, 2.0, 50.0], "frac_active": [1.0, 0.0, 0.5, 1.0]})
    stats = layer_stats("conv1", store, units)
    assert (stats.n_units, stats.n_dead, stats.module) == (3, 1, "features.relu1")
    assert stats.dead_share == pytest.approx(1 / 3)
    assert stats.selectivity == pytest.approx(0.4)
    assert (stats.peak_mean, stats.peak_median) == (5.0, 5.0)
    assert (stats.activation_mean, stats.activation_median) == (3.0, 3.0)  # units 0 and 2
    assert stats.active_mean == pytest.approx(0.75)


def test_a_layer_whose_units_are_all_dead_has_no_statistics(store):
    units = pd.DataFrame({"layer": ["conv1"] * 3, "unit": [0, 1, 2], "dead": [True] * 3,
                          "top_class_share": [0.0] * 3, "peak": [0.0] * 3,
                          "frac_active": [0.0] * 3})
    stats = layer_stats("conv1", store, units)
    assert stats.n_dead == 3 and stats.selectivity is None and stats.activation_mean is None


def test_weights_and_data_are_named_without_their_folders(tmp_path):
    def workflow(text: str):
        path = tmp_path / "w.toml"
        path.write_text(text, encoding="utf-8")
        return load_workflow(path)

    data = f'[data]\nsource = "imagefolder"\nroot = "{tmp_path / "my images"}"\n'
    checkpoint = workflow(data + f'[model]\nname = "zfnet_small"\ncheckpoint = '
                          f'"{tmp_path / "weights" / "best.pt"}"\n')
    assert weights_origin(checkpoint.model, checkpoint.train) == "checkpoint best.pt"
    assert dataset_name(checkpoint.data.source, checkpoint.data.root) == "my images"
    hub = workflow(data + '[model]\nname = "alexnet"\nweights = "IMAGENET1K_V1"\n')
    assert weights_origin(hub.model, hub.train) == "torchvision IMAGENET1K_V1"
    trained = workflow('[data]\nsource = "synthetic"\n[model]\nname = "zfnet_small"\n'
                       '[train]\nenabled = true\nseed = 7\nepochs = 3\n')
    assert weights_origin(trained.model, trained.train) == "trained in this run (seed 7, 3 epochs)"
    assert dataset_name(trained.data.source, trained.data.root) == \
        "synthetic shapes (generated)"
