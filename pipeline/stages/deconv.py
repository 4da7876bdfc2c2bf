"""Stage ``deconv``: projects every unit's top activations to pixel space, cropped to its field.

How, and how a killed run continues: :mod:`pipeline.interp.deconv_run`.
"""

from __future__ import annotations

from pipeline.atomic import zarr_writes_settled
from pipeline.catalog import (
    ACTIVATIONS,
    ANALYSED_IMAGES,
    ANALYSED_MODEL,
    CLASSES,
    MANIFEST,
    PROJECTIONS,
    TOP_MAPS,
    TOPK,
)
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: projections.zarr's root no longer copies top_k (rank's metadata holds it);
# 3: dimension names and coordinates (pipeline.labelled)
@register_stage("deconv", revision=3,
                reads=(*ANALYSED_MODEL, *ANALYSED_IMAGES, ACTIVATIONS, TOPK, TOP_MAPS),
                writes=(PROJECTIONS,),
                config=("data.source", "data.root", "model", "deconv"),
                # the model is the trained one when the workflow trains (its inputs say which)
                unkeyed=("train.enabled",))
def deconv(ctx: StageContext) -> None:
    """project each top activation back to pixel space"""
    from pipeline.interp import receptive_fields
    from pipeline.interp.deconv_run import write_projections
    from pipeline.interp.projection_meta import ProjectionPlan
    from pipeline.interp.projection_store import layer_plans
    from pipeline.labelled import ImageCoords
    from pipeline.ranking import read_rank_meta
    from pipeline.run_inputs import analysed_model, analysed_pixels, preprocessing

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.deconv
    device = ctx.compute_on(spec, deterministic=True)
    manifest, classes = ctx.read(MANIFEST), ctx.read(CLASSES)
    model = analysed_model(workflow, layout, classes, device)
    prep = preprocessing(workflow)
    activations = ctx.read(ACTIVATIONS)
    top_k = read_rank_meta(ctx.path(TOPK)).top_k
    layers = layer_plans(activations, receptive_fields(model, (prep.input_size, prep.input_size)))
    plan = ProjectionPlan(tuple(spec.methods), top_k, prep.input_size,
                          tuple(layer.label for layer in layers))
    with zarr_writes_settled():
        write_projections(ctx.output(PROJECTIONS), model, layers, plan,
                          ctx.read(TOPK), analysed_pixels(workflow, layout, manifest),
                          ImageCoords.of_run(manifest, classes),
                          prep.normalise(), spec.batch_size,
                          spec.num_workers, str(device), len(prep.mean),
                          ctx.path(TOP_MAPS))
