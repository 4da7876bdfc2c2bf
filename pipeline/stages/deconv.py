"""Stage ``deconv``: projects every unit's top activations to pixel space, cropped to its field.

How, and how a killed run continues: :mod:`pipeline.interp.projection_run`.
"""

from __future__ import annotations

import pandas as pd

from pipeline.atomic import zarr_writes_settled
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: projections.zarr's root no longer copies top_k (rank's metadata holds it);
# 3: dimension names and coordinates (pipeline.labelled)
@register_stage("deconv", inputs=("prepare", "train", "activations", "rank"),
                keys=("data.source", "data.root", "model", "deconv"), revision=3,
                outputs=("projections",), loads_weights=True,
                reads_images=True,
                # the model is the trained one when the workflow trains (its inputs say which)
                reads=("train.enabled",),)
def deconv(ctx: StageContext) -> None:
    """project each top activation back to pixel space"""
    import zarr

    from pipeline.device import resolve_device
    from pipeline.interp import receptive_fields
    from pipeline.interp.projection_meta import ProjectionPlan
    from pipeline.interp.projection_run import write_projections
    from pipeline.interp.projection_store import layer_plans
    from pipeline.labelled import ImageCoords
    from pipeline.models.analysed import analysed_model, analysed_pixels
    from pipeline.models.preprocessing import preprocessing
    from pipeline.ranking import read_rank_meta

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.deconv
    device = resolve_device(spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    prep = preprocessing(workflow)
    activations = zarr.open_group(layout.activations, mode="r")
    top_k = read_rank_meta(layout.topk).top_k
    layers = layer_plans(activations, receptive_fields(model, (prep.crop, prep.crop)))
    plan = ProjectionPlan(tuple(spec.methods), top_k, prep.crop,
                          tuple(layer.label for layer in layers))
    with zarr_writes_settled():
        write_projections(ctx.output(layout.projections, resumable=True), model, layers, plan,
                          pd.read_parquet(layout.topk), analysed_pixels(workflow, layout, manifest),
                          ImageCoords.of_run(manifest, pd.read_parquet(layout.classes)),
                          prep.normalise(), spec.batch_size,
                          spec.num_workers, str(device), len(prep.mean))
