"""The stage in a finished run of the reduced demo, and ``[featurevis] units`` picking the
units the index's strips show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import zarr

from pipeline.featurevis.meta import FeatureVisMeta
from pipeline.inference.store import store_layers
from pipeline.labelled import array_in, group_in
from pipeline.ranking.picks import most_selective
from pipeline.schemas import Units


def test_every_analysed_unit_has_its_images_in_the_run(tiny_run):
    run = tiny_run / "runs" / "tiny"
    store = zarr.open_group(run / "featurevis.zarr", mode="r")
    meta = FeatureVisMeta.from_attrs(store.attrs)
    assert meta.steps == 8 and meta.input_size == 64 and meta.device == "cpu"
    units = pd.read_parquet(run / "units.parquet")
    for layer in store_layers(zarr.open_group(run / "activations.zarr", mode="r")):
        group = group_in(store, layer.label)
        assert list(array_in(group, "unit")[...]) == list(range(layer.channels))
        images = np.asarray(array_in(group, "images")[...])
        assert images.shape == (layer.channels, 64, 64, 3)
        rows = units[units[Units.layer] == layer.label].sort_values(Units.unit)
        np.testing.assert_array_equal(array_in(group, "data_peak")[...],
                                      rows[Units.peak].to_numpy(np.float32))
        driven = np.asarray(array_in(group, "driven")[...])
        # after 8 steps most units are already raised; the images are patterns, not grey
        assert driven[0].mean() > 0.5
        assert images[driven[0]].reshape(int(driven[0].sum()), -1).std(axis=1).min() > 5


def test_units_n_picks_the_strips_units():
    units = pd.DataFrame({
        "layer": ["c"] * 5, "unit": [0, 1, 2, 3, 4],
        "peak": [5.0, 1.0, 2.0, 9.0, 3.0], "dead": [False, False, False, True, False],
        "n_top": [9, 9, 9, 0, 2], "top_class": [0, 1, 0, -1, 1],
        "top_class_share": [0.9, 0.95, 0.3, 0.0, 1.0], "n_selectivity": [9, 9, 9, 0, 2]})
    priors = np.array([0.5, 0.5])
    # the dead unit never; all-images units first; then named classes, larger shares, stronger
    assert most_selective(units, priors, 3) == [1, 0, 2]
    assert most_selective(units, priors, 10) == [1, 0, 2, 4]
