"""Stage ``activations``: runs the model over every analysed image, storing unit summaries."""

from __future__ import annotations

from dataclasses import replace

from pipeline.atomic import zarr_writes_settled
from pipeline.catalog import (
    ACTIVATIONS,
    ANALYSED_IMAGES,
    ANALYSED_MODEL,
    CLASSES,
    MANIFEST,
    SKIPPED,
    TOP_MAPS,
)
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage
from pipeline.stages.sources import share_source


# revision 2: dimension names and coordinates (pipeline.labelled); images of more than 8 bits
# per channel scaled to 8, not clipped (pipeline.data.images)
@register_stage("activations", revision=2,
                reads=(*ANALYSED_MODEL, *ANALYSED_IMAGES),
                writes=(ACTIVATIONS, SKIPPED, TOP_MAPS),
                config=("data.source", "data.root", "model", "activations"),
                # which model is loaded follows train.enabled, and so do its inputs; the dask
                # section says how shard tasks are spread over a cluster; rank's top_k, how many
                # maps per unit to keep for the deconv stage (the top_maps cache)
                unkeyed=("train.enabled", "dask", "rank.top_k"))
def activations(ctx: StageContext) -> bool:
    """record each unit's max, argmax and mean over every image"""
    with zarr_writes_settled():
        return _fill_store(ctx)


def _fill_store(ctx: StageContext) -> bool:
    """Create or resume the staged store, fill the chunks of this run (or shard), finish it
    when none are left; False: other shards still have chunks to do."""
    from pipeline.device import BF16_AUTOCAST, Compute, resolve_device
    from pipeline.inference.activations_run import claim_finishing, finish_activations
    from pipeline.inference.store import (
        chunk_count,
        completed_chunks,
        create_store,
        creation_lock,
        shard_chunks,
    )
    from pipeline.interp.layers import store_layer_metas
    from pipeline.labelled import ImageCoords

    spec = ctx.workflow.activations
    on_cluster = ctx.client is not None and ctx.shard is None
    # On a cluster the workers load the model on their own devices; here it only gives the layers.
    device = resolve_device("cpu") if on_cluster else ctx.compute_on(spec)
    manifest, classes = ctx.read(MANIFEST), ctx.read(CLASSES)
    source = share_source(ctx, len(classes), absolute=on_cluster)
    model = source.model.load(device)
    meta = store_layer_metas(model, source.preprocessing.input_size, spec.modules)
    n_chunks = chunk_count(len(manifest), spec.chunk_size)
    final = ctx.path(ACTIVATIONS)
    with creation_lock(final):  # the client creates every array before any write
        staged = ctx.output(ACTIVATIONS)
        create_store(staged, ImageCoords.of_run(manifest, classes), spec.chunk_size, meta,
                     top=min(5, len(classes)))
        top_maps = ctx.output(TOP_MAPS)
        top_maps.mkdir(exist_ok=True)
    source = replace(source, keep_maps=ctx.workflow.rank.top_k,
                     top_maps=top_maps.absolute() if on_cluster else top_maps)
    done = completed_chunks(staged)
    if done:
        print(f"[activations] resuming: {len(done)} of {n_chunks} chunks already written")
    mine = range(n_chunks) if on_cluster else shard_chunks(n_chunks, ctx.shard)
    todo = [chunk for chunk in mine if chunk not in done]
    reports = _fill(ctx, source, staged, todo, None if on_cluster else model)
    for report in reports:
        if report.images:
            print(f"[activations] {report.describe()}")
    if on_cluster:  # the workers' devices, each with the section's arithmetic
        devices = sorted({report.device for report in reports if report.images}) or ["-"]
        ctx.compute = Compute(", ".join(devices), "tf32" if spec.tf32 and any(
            name.startswith("cuda") for name in devices) else "float32", spec.bf16 and all(
            name.split(":")[0] in BF16_AUTOCAST for name in devices))
    left = claim_finishing(final, staged, n_chunks, ctx.shard)
    if left is not None:
        index, count = ctx.shard or (0, 1)
        print(f"[activations] shard {index}/{count} finished; "
              f"{left} chunks are left to the other shards")
        return False
    finished = finish_activations(staged, sorted({report.device for report in reports
                                                  if report.images}),
                                  str(device), manifest["path"].to_numpy(),
                                  lambda: ctx.output(SKIPPED),
                                  ctx.compute is not None and ctx.compute.bf16, top_maps)
    summary, skipped = finished.summary, ctx.path(SKIPPED).name
    print(f"[activations] top-1 {summary.top1:.3f}, top-{finished.top} {summary.top5:.3f} on "
          f"{summary.n_readable} images; {finished.n_skipped} unreadable images skipped"
          + (f" (listed in {skipped})" if finished.n_skipped else ""))
    return True


def _fill(ctx: StageContext, source, staged, chunks: list[int], model) -> list:
    """Fill ``chunks`` of the store at ``staged``: on the dask client's workers (which load
    the model on their own devices, each chunk written only while the store still belongs to
    this stage key), else in this process with ``model``."""
    from pipeline.inference.shard import fill_share

    if model is not None:
        return [fill_share(source, staged, chunks, model)]
    if not chunks:
        return []
    from pipeline.cluster import run_shards

    return run_shards(ctx.client, ctx.workflow.dask, fill_share, (source, staged.absolute()),
                      chunks, "activations", model=None, stage_key=ctx.key)
