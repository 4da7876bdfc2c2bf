"""projections.zarr's attributes round-trip through their dataclasses."""

from pipeline.interp.projection_meta import ProjectedLayer, ProjectionPlan, ProjectionsMeta


def test_attributes_round_trip_as_json_lists():
    plan = ProjectionPlan(("deconvnet", "guided"), 9, 64, ("conv1", "conv2"))
    assert plan.to_attrs() == {"methods": ["deconvnet", "guided"], "top_k": 9,
                               "image_size": 64, "layers": ["conv1", "conv2"]}
    assert ProjectionPlan.from_attrs(plan.to_attrs()) == plan
    meta = ProjectionsMeta(("deconvnet",), 64, "cpu")
    assert "top_k" not in meta.to_attrs()  # rank's metadata is the one record of it
    assert ProjectionsMeta.from_attrs(meta.to_attrs()) == meta
    layer = ProjectedLayer("features.relu2", (19, 19), (19, 19), ("deconvnet",),
                           (-4.5, -4.5, 68.5, 68.5))
    assert ProjectedLayer.from_attrs(layer.to_attrs()) == layer
