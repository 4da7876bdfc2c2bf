"""Stage ``activations``: runs the model over every analysed image, storing unit summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.atomic import write_json, zarr_writes_settled
from pipeline.models.analysed import analysed_model
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("activations", inputs=("prepare", "train"),
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
    import zarr

    from pipeline.device import resolve_device
    from pipeline.inference.shard import fill_share
    from pipeline.inference.store import (
        LayerMeta,
        chunk_count,
        completed_chunks,
        create_store,
        creation_lock,
        shard_chunks,
    )
    from pipeline.interp import analysable_layers
    from pipeline.models.preprocessing import preprocessing

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.activations
    on_cluster = ctx.client is not None and ctx.shard is None
    # On a cluster the workers load the model on their own devices; here it only gives the layers.
    device = resolve_device("cpu" if on_cluster else spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    size = preprocessing(workflow).crop
    layers = analysable_layers(model, (size, size), names=list(spec.layers) or None)
    n_chunks = chunk_count(len(manifest), spec.chunk_size)
    meta = [LayerMeta(layer.label, layer.name, layer.channels, layer.out_shape[1],
                      layer.out_shape[2], tuple(layer.receptive_field.size)) for layer in layers]
    with creation_lock(layout.activations):  # the client creates every array before any write
        staged = ctx.output(layout.activations, resumable=True)
        create_store(staged, len(manifest), spec.chunk_size, meta,
                     top=min(5, len(pd.read_parquet(layout.classes))))
    done = completed_chunks(staged)
    if done:
        print(f"[activations] resuming: {len(done)} of {n_chunks} chunks already written")
    if on_cluster:
        from pipeline.cluster import run_shards

        todo = [chunk for chunk in range(n_chunks) if chunk not in done]
        reports = run_shards(ctx.client, workflow.dask, fill_share,
                             (workflow.with_absolute_paths(), layout, staged.absolute()), todo,
                             "activations", model=None, stage_key=ctx.key) if todo else []
    else:
        todo = [chunk for chunk in shard_chunks(n_chunks, ctx.shard) if chunk not in done]
        reports = [fill_share(workflow, layout, staged, todo, model)]
    for report in reports:
        if report.images:
            print(f"[activations] {report.describe()}")

    with creation_lock(layout.activations):  # exactly one shard finishes the store
        remaining = n_chunks - len(completed_chunks(staged))
        finishing = staged / "finishing.json"
        if remaining or (ctx.shard and finishing.exists()):
            print(f"[activations] shard {ctx.shard[0]}/{ctx.shard[1]} finished; "
                  f"{remaining} chunks are left to the other shards")
            return False
        write_json(finishing, {"by": ctx.shard})
    store = zarr.open_group(staged, mode="r+")
    ran_on = sorted({report.device for report in reports if report.images})
    # A run resumed after its last chunk computed nothing: the devices are those a killed
    # finishing run recorded, if it got that far, else this one's (the attribute is not there
    # until the store is finished, so its absence is expected here).
    _finish(store, staged, manifest, ctx,
            ", ".join(ran_on) or str(store.attrs.get("device", device)))
    return True


def _finish(store, staged, manifest: pd.DataFrame, ctx: StageContext, device: str) -> None:
    """Accuracy over the readable images, and the table of skipped ones."""
    from pipeline.inference.store import InferenceSummary, drop_progress, skipped_images

    labels = np.asarray(store["label"][:])
    pred = np.asarray(store["pred"][:])
    readable = pred[:, 0] >= 0
    top1 = float((pred[readable, 0] == labels[readable]).mean()) if readable.any() else 0.0
    top5 = float((pred[readable] == labels[readable, None]).any(axis=1).mean()) \
        if readable.any() else 0.0
    store.attrs.update(InferenceSummary(device, top1, top5, int(readable.sum())).to_attrs())
    skipped = skipped_images(staged)
    ids = [image_id for image_id, _ in skipped]
    table = pd.DataFrame({"image_id": pd.Series(ids, dtype="int64"),
                          "path": manifest["path"].to_numpy()[ids] if ids else [],
                          "reason": [reason for _, reason in skipped]})
    table.to_parquet(ctx.output(ctx.layout.skipped), index=False)
    drop_progress(staged)
    print(f"[activations] top-1 {top1:.3f}, top-{pred.shape[1]} {top5:.3f} on "
          f"{int(readable.sum())} images; {len(skipped)} unreadable images skipped"
          + (f" (listed in {ctx.layout.skipped.name})" if skipped else ""))
