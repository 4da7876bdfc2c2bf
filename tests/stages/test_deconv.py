"""The deconv stage stores the engine's exact projections (every method), patches and the
unit's whole activation map of each top image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from pipeline.config import load_workflow
from pipeline.inference.top_maps import KeptMaps
from pipeline.interp import Projector, field_tile, receptive_fields
from pipeline.interp.maps import feature_maps
from pipeline.layout import RunLayout
from pipeline.run_inputs import analysed_images, analysed_model


@pytest.fixture(scope="module")
def run(tiny_run):
    workflow = load_workflow(tiny_run / "workflows" / "tiny.toml")
    layout = RunLayout(tiny_run, workflow.name)
    return workflow, layout


@pytest.mark.parametrize("label", ["conv2", "conv4"])
def test_stored_projections_are_the_engines_output_for_every_method(run, label):
    workflow, layout = run
    store = zarr.open_group(layout.projections, mode="r")
    group = store[label]
    methods = list(group.attrs["methods"])
    assert methods == list(workflow.deconv.methods) == ["deconvnet", "guided", "gradient"]
    projections, scales = group["projections"], group["projection_scale"][:]
    assert projections.dtype == np.float16 and projections.shape[0] == len(methods)
    model = analysed_model(workflow, layout, pd.read_parquet(layout.classes), torch.device("cpu"))
    manifest = pd.read_parquet(layout.manifest)
    images = analysed_images(workflow, layout, manifest)
    module = group.attrs["module"]
    field = receptive_fields(model, (64, 64))[module]
    tile = tuple(group.attrs["tile"])
    topk = pd.read_parquet(layout.topk)
    rows = topk[topk["layer"] == label].sort_values(["unit", "rank"]).iloc[::37][:6]
    assert len(rows) >= 3
    for m, method in enumerate(methods):
        projector = Projector(model, method=method)
        for row in rows.itertuples(index=False):
            image = images[int(row.image_id)][0][None]
            exact = projector.project(image, module, torch.tensor([row.unit]),
                                      torch.tensor([[row.y, row.x]]))[0]
            expected = field_tile(exact.permute(1, 2, 0).numpy(), field.box(row.y, row.x), tile,
                                 0.0)
            stored = projections[m, row.unit, row.rank].astype(np.float32) * scales[m, row.unit,
                                                                                   row.rank]
            peak = np.abs(expected).max()
            assert peak > 0 and np.isclose(scales[m, row.unit, row.rank], peak, rtol=1e-5)
            np.testing.assert_allclose(stored, expected, atol=peak * 1e-3)
    # the methods differ (otherwise the switch on unit pages would show one picture thrice)
    first = rows.iloc[0]
    a, b = (projections[m, first.unit, first["rank"]] for m in (0, 2))
    assert not np.allclose(a, b)


def test_activation_maps_are_the_units_whole_map(run):
    workflow, layout = run
    group = zarr.open_group(layout.projections, mode="r")["conv3"]
    maps = group["maps"][:]
    topk = pd.read_parquet(layout.topk).query("layer == 'conv3'")
    model = analysed_model(workflow, layout, pd.read_parquet(layout.classes), torch.device("cpu"))
    images = analysed_images(workflow, layout, pd.read_parquet(layout.manifest))
    row = topk.iloc[len(topk) // 2]
    fmap = feature_maps(model, images[int(row.image_id)][0][None], group.attrs["module"])
    np.testing.assert_allclose(maps[row.unit, row["rank"]], fmap[0, row.unit].numpy(), rtol=1e-4,
                               atol=1e-6)  # batched and single-image convolutions round apart
    # every stored map peaks at the ranked value, where rank found it
    for row in topk.itertuples(index=False):
        unit_map = maps[row.unit, row.rank]
        assert np.isclose(unit_map.max(), row.value, rtol=1e-4)
        assert np.isclose(unit_map[row.y, row.x], row.value, rtol=1e-4)
    top, left, bottom, right = group.attrs["map_extent"]
    field = receptive_fields(model, (64, 64))[group.attrs["module"]]
    # each cell is drawn centred on its unit's receptive field, one jump (8 px) wide
    assert top == left == field.first[0] + field.size[0] / 2 - field.jump[0] / 2
    assert bottom - top == right - left == 8 * maps.shape[2]


def test_the_stored_maps_are_those_the_activations_stage_kept(run):
    """Every top image's map is one the activations stage kept (``top_maps``)."""
    _, layout = run
    kept = KeptMaps(layout.top_maps)
    store = zarr.open_group(layout.projections, mode="r")
    topk = pd.read_parquet(layout.topk)
    for label in store.group_keys():
        rows = topk[topk["layer"] == label]
        maps = store[label]["maps"][:]
        found, values = kept.find(label, rows["unit"].to_numpy(), rows["image_id"].to_numpy(),
                                  maps.shape[2:])
        assert len(rows) and found.all()
        assert np.array_equal(values, maps[rows["unit"].to_numpy(), rows["rank"].to_numpy()])
