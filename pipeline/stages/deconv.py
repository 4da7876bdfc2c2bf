"""Stage ``deconv``: projects every unit's top activations to pixel space, cropped to its field.

The store's layout, and why it is written a block of units at a time, is described in
:mod:`pipeline.interp.projection_store`. Each distinct top image is decoded once per stage,
in parallel (``[deconv] num_workers``), into the staging folder (:mod:`pipeline.data.decoded`).
The staged store survives a kill: a rerun with the same key continues after the last block
written, and skips decoding when it had finished.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.atomic import zarr_writes_settled
from pipeline.progress import progress_bar
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("deconv", inputs=("prepare", "train", "activations", "rank"),
                keys=("data.source", "data.root", "model", "deconv"),
                outputs=lambda workflow, layout: (layout.projections,), loads_weights=True,
                reads_images=True)
def deconv(ctx: StageContext) -> None:
    """project each top activation back to pixel space"""
    import zarr

    from pipeline.data.decoded import DecodedImages
    from pipeline.device import resolve_device
    from pipeline.interp import receptive_fields
    from pipeline.interp.projection_store import (
        DECODED,
        BlockProjector,
        create_store,
        finish_store,
        layer_plans,
        units_written,
    )
    from pipeline.models.preprocessing import preprocessing
    from pipeline.stages.inputs import analysed_model, analysed_pixels

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.deconv
    device = resolve_device(spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    prep = preprocessing(workflow)
    activations = zarr.open_group(layout.activations, mode="r")
    topk = pd.read_parquet(layout.topk)
    layers = layer_plans(activations, receptive_fields(model, (prep.crop, prep.crop)))

    with zarr_writes_settled():
        staged = ctx.output(layout.projections, resumable=True)
        create_store(staged, layers, spec.methods, workflow.rank.top_k, prep.crop,
                     {"device": str(device)})
        resumed = sum(units_written(staged, layer.label) for layer in layers)
        if resumed:
            total = sum(layer.channels for layer in layers)
            print(f"[deconv] resuming: {resumed} of {total} units already projected")
        ids = np.unique(topk["image_id"].to_numpy())
        bar = progress_bar("decode top images", total=len(ids), unit="img")
        decoded = DecodedImages.build(
            staged / DECODED, ids, analysed_pixels(workflow, layout, manifest), prep.crop,
            spec.num_workers, bar.update)
        bar.close()
        if decoded.reused:
            print(f"[deconv] reusing the {len(ids)} top images a killed run had decoded")
        job = BlockProjector(model, spec.methods, decoded, prep.normalise(),
                             workflow.rank.top_k, spec.batch_size)
        bar = progress_bar("deconv", total=len(topk) * len(spec.methods), unit="proj")
        for layer in layers:
            job.layer(staged, layer, topk[topk["layer"] == layer.label], bar.update)
        bar.close()
        finish_store(staged)
