"""The activations store's attributes are written and read through frozen dataclasses."""

import pytest
import zarr

from pipeline.inference.store import (
    InferenceSummary,
    LayerMeta,
    StoreMeta,
    create_store,
    store_layers,
)
from pipeline.labelled import ImageCoords

LAYERS = [LayerMeta("conv1", "features.relu1", 3, 5, 5, (7, 7)),
          LayerMeta("conv2", "features.relu2", 4, 2, 2, (19, 19))]


def test_the_store_records_its_layers_and_shape(tmp_path):
    path = tmp_path / "store.zarr"
    create_store(path, ImageCoords.numbered(10), 4, LAYERS, top=5)
    store = zarr.open_group(path, mode="r")
    assert store_layers(store) == LAYERS
    assert StoreMeta.from_attrs(store.attrs) == StoreMeta(("conv1", "conv2"), 4, 10)
    # JSON has lists, not tuples: the attributes are what older releases wrote
    assert dict(store["conv1"].attrs) == {"label": "conv1", "module": "features.relu1",
                                          "channels": 3, "height": 5, "width": 5,
                                          "receptive_field": [7, 7]}


def test_an_attribute_the_pipeline_always_writes_is_never_defaulted():
    summary = InferenceSummary("cpu", 0.5, 0.75, 8)
    assert InferenceSummary.from_attrs(summary.to_attrs()) == summary
    with pytest.raises(KeyError, match="n_readable"):
        InferenceSummary.from_attrs({"device": "cpu", "top1": 0.5, "top5": 0.75})


def test_records_read_back_with_their_declared_types():
    """JSON gives lists and may give 3 for 3.0: a record reads back as it was written."""
    meta = LayerMeta.from_attrs({"label": "conv1", "module": "m", "channels": 3.0, "height": 5,
                                 "width": 5, "receptive_field": [7, 7]})
    assert meta == LayerMeta("conv1", "m", 3, 5, 5, (7, 7))
    assert isinstance(meta.channels, int) and isinstance(meta.receptive_field, tuple)
