"""Stage ``activations``: runs the model over every analysed image, storing unit summaries."""

from __future__ import annotations

import pandas as pd

from pipeline.atomic import zarr_writes_settled
from pipeline.models.analysed import analysed_model
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: dimension names and coordinates (pipeline.labelled); images of more than 8 bits
# per channel scaled to 8, not clipped (pipeline.data.images)
@register_stage("activations", inputs=("prepare", "train"), revision=2,
                keys=("data.source", "data.root", "model", "activations"),
                outputs=("activations", "skipped"),
                loads_weights=True, reads_images=True,
                # which model is loaded follows train.enabled, and so do its inputs; the dask
                # section says how shard tasks are spread over a cluster
                reads=("train.enabled", "dask"))
def activations(ctx: StageContext) -> bool:
    """record each unit's max, argmax and mean over every image"""
    with zarr_writes_settled():
        return _fill_store(ctx)


def _fill_store(ctx: StageContext) -> bool:
    """Create or resume the staged store, fill the chunks of this run (or shard), finish it
    when none are left; False: other shards still have chunks to do."""
    from pipeline.device import resolve_device
    from pipeline.inference.lifecycle import (
        claim_finishing,
        fill_shares,
        finish_activations,
        store_layer_metas,
    )
    from pipeline.inference.store import (
        chunk_count,
        completed_chunks,
        create_store,
        creation_lock,
        shard_chunks,
    )
    from pipeline.labelled import ImageCoords
    from pipeline.models.preprocessing import preprocessing

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.activations
    on_cluster = ctx.client is not None and ctx.shard is None
    # On a cluster the workers load the model on their own devices; here it only gives the layers.
    device = resolve_device("cpu" if on_cluster else spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    meta = store_layer_metas(model, preprocessing(workflow).crop, spec.layers)
    n_chunks = chunk_count(len(manifest), spec.chunk_size)
    with creation_lock(layout.activations):  # the client creates every array before any write
        staged = ctx.output(layout.activations, resumable=True)
        classes = pd.read_parquet(layout.classes)
        create_store(staged, ImageCoords.of_run(manifest, classes), spec.chunk_size, meta,
                     top=min(5, len(classes)))
    done = completed_chunks(staged)
    if done:
        print(f"[activations] resuming: {len(done)} of {n_chunks} chunks already written")
    mine = range(n_chunks) if on_cluster else shard_chunks(n_chunks, ctx.shard)
    todo = [chunk for chunk in mine if chunk not in done]
    reports = fill_shares(workflow, layout, staged, todo, model,
                          ctx.client if on_cluster else None, ctx.key)
    for report in reports:
        if report.images:
            print(f"[activations] {report.describe()}")
    left = claim_finishing(layout.activations, staged, n_chunks, ctx.shard)
    if left is not None:
        print(f"[activations] shard {ctx.shard[0]}/{ctx.shard[1]} finished; "
              f"{left} chunks are left to the other shards")
        return False
    finished = finish_activations(staged, sorted({report.device for report in reports
                                                  if report.images}),
                                  str(device), manifest["path"].to_numpy(),
                                  lambda: ctx.output(layout.skipped))
    summary, skipped = finished.summary, layout.skipped.name
    print(f"[activations] top-1 {summary.top1:.3f}, top-{finished.top} {summary.top5:.3f} on "
          f"{summary.n_readable} images; {finished.n_skipped} unreadable images skipped"
          + (f" (listed in {skipped})" if finished.n_skipped else ""))
    return True
