"""Stage ``rank``: each unit's top-k images, statistics and class selectivity, as parquet."""

from __future__ import annotations

from pipeline.catalog import (
    ACTIVATIONS,
    ANALYSED_IMAGES,
    ANALYSED_MODEL,
    CLASSES,
    HISTOGRAMS,
    SELECTIVITY,
    TOPK,
    UNITS,
)
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage
from pipeline.stages.sources import share_source


# revision 2: topk.parquet records top_k in its metadata (pipeline.ranking.meta)
# The model and images are read for a bfloat16 store only, whose top candidates are measured
# again in float32 (pipeline.ranking.recheck); they change the store anyway.
@register_stage("rank", reads=(ACTIVATIONS, *ANALYSED_MODEL, *ANALYSED_IMAGES),
                writes=(TOPK, UNITS, SELECTIVITY, HISTOGRAMS),
                config=("rank", "data.source", "data.root", "model", "activations"),
                unkeyed=("train.enabled",), revision=2)
def rank(ctx: StageContext) -> None:
    """rank every unit's top images with dask"""
    from pipeline.inference.store import InferenceSummary
    from pipeline.ranking import RankMeta, rank_store, write_topk

    top_k = ctx.workflow.rank.top_k
    store = ctx.path(ACTIVATIONS)
    bf16 = InferenceSummary.from_attrs(_root_attrs(store)).bf16
    tables = rank_store(store, top_k, scheduler=ctx.client,
                        float32=_measure_float32(ctx) if bf16 else None)
    write_topk(tables.topk, ctx.output(TOPK), RankMeta(top_k))
    for frame, item in ((tables.units, UNITS), (tables.selectivity, SELECTIVITY),
                        (tables.histograms, HISTOGRAMS)):
        ctx.write(item, frame)
    units = tables.units
    where = f" on {ctx.client.scheduler.address}" if ctx.client is not None else ""
    print(f"[rank] {len(units)} units in {units['layer'].nunique()} layers{where}, "
          f"{int(units['dead'].sum())} dead" + (", top candidates re-checked in float32"
                                                if bf16 else ""))


def _root_attrs(store):
    import zarr

    return zarr.open_group(store, mode="r").attrs


def _measure_float32(ctx: StageContext):
    """What measures images in float32 for a bfloat16 store: the activations stage's model,
    images and device (its TF32 setting too), loaded when first asked."""
    import numpy as np

    def measure(ids: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        import zarr

        from pipeline.data.tolerant import TolerantImages
        from pipeline.device import compute_on
        from pipeline.inference.float32 import float32_summaries
        from pipeline.inference.store import store_layers

        spec = ctx.workflow.activations
        device, ctx.compute = compute_on(spec.device, tf32=spec.tf32)
        source = share_source(ctx, len(ctx.read(CLASSES)))
        model = source.model.load(device)
        prep = source.preprocessing
        size = prep.input_size
        images = TolerantImages(source.images(), (len(prep.mean), size, size))
        layers = {meta.module: meta.label
                  for meta in store_layers(zarr.open_group(ctx.path(ACTIVATIONS), mode="r"))}
        print(f"[rank] measuring {len(ids)} candidate images again in float32 on {device}")
        return float32_summaries(model, images, layers, ids, spec.batch_size,
                                 spec.num_workers, device)

    return measure
