"""Stage ``sanity``: the projections through randomised weights, and against their own images
(Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

What it computes: :mod:`pipeline.sanity.sanity_run` and :mod:`pipeline.sanity.inputs`; what it
writes: :mod:`pipeline.sanity.store`. It covers the methods ``projections.zarr`` holds. It takes
seconds on the demo, so a killed run simply computes it again.
"""

from __future__ import annotations

import pandas as pd

from pipeline.catalog import (
    ACTIVATIONS,
    ANALYSED_IMAGES,
    ANALYSED_MODEL,
    CLASSES,
    INPUT_DEPENDENCE,
    MANIFEST,
    PROJECTIONS,
    RANDOMISED_PROJECTIONS,
    SANITY,
    TOPK,
)
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("sanity",
                reads=(*ANALYSED_MODEL, *ANALYSED_IMAGES, ACTIVATIONS, TOPK, PROJECTIONS),
                writes=(SANITY, INPUT_DEPENDENCE, RANDOMISED_PROJECTIONS),
                config=("data.source", "data.root", "model", "sanity"),
                # the model is the trained one when the workflow trains (its inputs say which)
                unkeyed=("train.enabled",),
                enabled=lambda workflow: workflow.sanity.enabled)
def sanity(ctx: StageContext) -> None:
    """compare projections through randomised weights with the trained ones (sanity checks)"""
    from pipeline.interp import receptive_fields
    from pipeline.interp.projection_meta import ProjectionsMeta
    from pipeline.interp.projection_store import layer_plans
    from pipeline.progress import progress_bar
    from pipeline.run_inputs import analysed_model, analysed_pixels, preprocessing
    from pipeline.sanity.inputs import INPUT_COLUMNS, layer_dependence
    from pipeline.sanity.sanity_run import Pictures, SanityPlan, run_cascade, sample_rows
    from pipeline.sanity.store import SanityMeta, write_randomised, write_tables

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.sanity
    device = ctx.compute_on(spec, deterministic=True)
    manifest = ctx.read(MANIFEST)
    model = analysed_model(workflow, layout, ctx.read(CLASSES), device)
    prep = preprocessing(workflow)
    projections = ctx.read(PROJECTIONS)
    methods = ProjectionsMeta.from_attrs(projections.attrs).methods
    size = prep.input_size
    layers = layer_plans(ctx.read(ACTIVATIONS), receptive_fields(model, (size, size)))
    topk = ctx.read(TOPK)
    plan = SanityPlan(tuple(methods), spec.units, spec.images, spec.seed, spec.batch_size)
    pixels = analysed_pixels(workflow, layout, manifest)
    bar = progress_bar("sanity", total=0, unit="proj")
    result = run_cascade(model, layers, topk, plan,
                         Pictures(lambda i: pixels[i][0], prep.normalise(), prep.input_size),
                         total=lambda n: bar.reset(total=n), advance=bar.update)
    bar.close()
    inputs = pd.DataFrame(
        [{"layer": layer.label, **row} for layer in layers for row in layer_dependence(
            projections[layer.label], methods,
            sample_rows(topk[topk["layer"] == layer.label], spec.units, spec.images)["unit"]
            .unique().tolist(), spec.images, prep.input_size)],
        columns=list(INPUT_COLUMNS))
    write_tables(result.table, ctx.output(SANITY), inputs, ctx.output(INPUT_DEPENDENCE))
    write_randomised(ctx.output(RANDOMISED_PROJECTIONS), result, layers,
                     SanityMeta(tuple(methods), spec.seed, prep.input_size,
                                tuple(step.down_to for step in result.steps)), len(prep.mean))
    full = result.table[result.table["full"]] if len(result.table) else result.table
    print(f"[sanity] {len(layers)} layers x {len(methods)} methods, {len(result.steps)} cascade "
          f"steps; under full randomisation, mean Spearman "
          + ", ".join(f"{m} {full[full['method'] == m]['spearman_mean'].mean():.2f}"
                      for m in methods))
