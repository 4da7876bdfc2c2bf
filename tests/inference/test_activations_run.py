"""The activations store's ends from the package alone: the layers it is created for, and the
finishing that records the accuracy and the skipped images."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import zarr
from torch import nn

from pipeline.inference.activations_run import finish_activations
from pipeline.inference.store import (
    InferenceSummary,
    create_store,
    mark_completed,
    write_chunk,
)
from pipeline.interp.layers import store_layer_metas
from pipeline.labelled import ImageCoords


def test_the_store_records_the_named_layers_or_every_analysable_one():
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(4, 6, 3, stride=2)), ("relu2", nn.ReLU()),
    ]))
    every = store_layer_metas(model, 11, ())
    assert [meta.module for meta in every] == ["relu1", "relu2"]
    assert [(meta.channels, meta.height, meta.width) for meta in every] == [(4, 9, 9), (6, 4, 4)]
    assert every[1].receptive_field == (5, 5)
    # [activations] modules names modules, and a named layer is labelled by its name
    named = store_layer_metas(model, 11, ["relu2"])
    assert [(meta.label, meta.module, meta.channels, meta.receptive_field) for meta in named] \
        == [("relu2", "relu2", 6, (5, 5))]


def test_finishing_records_accuracy_over_readable_images_and_lists_the_skipped(tmp_path):
    model = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 2, 3)), ("relu", nn.ReLU())]))
    staged = tmp_path / "activations.zarr"
    create_store(staged, ImageCoords.numbered(4, [1, 1, 0, 0]), 2,
                 store_layer_metas(model, 8, ()), top=2)
    root = zarr.open_group(staged, mode="r+")
    # image 2 unreadable (pred -1); of the readable ones, 0 right at top-1, 1 at top-2 only
    write_chunk(root, 0, {"pred": np.array([[1, 0], [0, 1]], np.int32)})
    write_chunk(root, 2, {"pred": np.array([[-1, -1], [2, 1]], np.int32)})
    mark_completed(staged, 0, [])
    mark_completed(staged, 1, [(2, "truncated file")])

    paths = np.array(["a.png", "b.png", "c.png", "d.png"], dtype=object)
    finished = finish_activations(staged, ["cuda"], "cpu", paths,
                                  lambda: tmp_path / "skipped.parquet")

    assert finished.summary == InferenceSummary("cuda", pytest.approx(1 / 3),
                                                pytest.approx(2 / 3), 3)
    assert (finished.top, finished.n_skipped) == (2, 1)
    assert InferenceSummary.from_attrs(zarr.open_group(staged).attrs) == finished.summary
    skipped = pd.read_parquet(tmp_path / "skipped.parquet")
    assert skipped.to_dict("records") == [
        {"image_id": 2, "path": "c.png", "reason": "truncated file"}]
    assert not (staged / "done").exists()


def test_a_finishing_that_computed_nothing_keeps_the_device_already_recorded(tmp_path):
    model = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 2, 3)), ("relu", nn.ReLU())]))
    staged = tmp_path / "activations.zarr"
    create_store(staged, ImageCoords.numbered(2), 2, store_layer_metas(model, 8, ()), top=1)
    zarr.open_group(staged, mode="r+").attrs["device"] = "cuda, mps"
    finished = finish_activations(staged, [], "cpu", np.array(["a", "b"], dtype=object),
                                  lambda: tmp_path / "skipped.parquet")
    assert finished.summary.device == "cuda, mps" and finished.summary.n_readable == 0
    assert len(pd.read_parquet(tmp_path / "skipped.parquet")) == 0
