"""Stage ``rank``: each unit's top-k images, statistics and class selectivity, as parquet."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    import numpy as np

    from pipeline.ranking.recheck import Measure


# revision 2: topk.parquet records top_k in its metadata (pipeline.ranking.meta)
# The model and images are read for a bfloat16 store only, whose top candidates are measured
# again in float32 (pipeline.ranking.recheck); they change the store anyway.
@register_stage("rank", reads=(ACTIVATIONS, *ANALYSED_MODEL, *ANALYSED_IMAGES),
                writes=(TOPK, UNITS, SELECTIVITY, HISTOGRAMS),
                config=("rank", "data.source", "data.root", "model", "activations"),
                unkeyed=("train.enabled",), revision=2)
def rank(ctx: StageContext) -> None:
    """rank every unit's top images with dask"""
    from pipeline.ranking import RankMeta, rank_store, write_topk

    top_k = ctx.workflow.rank.top_k
    # the workflow, not the store, says whether the maxima are bfloat16's: a store written
    # before stores recorded it is re-checked too
    bf16 = ctx.workflow.activations.bf16
    tables = rank_store(ctx.path(ACTIVATIONS), top_k, scheduler=ctx.client,
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
    if tables.uncertain:
        print(f"[rank] warning: for {tables.uncertain} units an image left out of the float32 "
              "re-check came within 1/32 of the top in bfloat16, and may belong to it: "
              "[activations] bf16 = false ranks every image in float32")


def _measure_float32(ctx: StageContext) -> Measure:
    """What measures images in float32 for a bfloat16 store: the activations stage's model,
    images, device and batch size (its TF32 setting too). The device is resolved now, before
    the reduction, so a missing one is said before any work; the model loads when first
    asked."""
    from pipeline.device import compute_on

    spec = ctx.workflow.activations
    device, ctx.compute = compute_on(spec.device, tf32=spec.tf32)

    def measure(ids: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        import zarr

        from pipeline.data.tolerant import TolerantImages
        from pipeline.inference.float32 import float32_summaries
        from pipeline.inference.store import store_layers

        source = share_source(ctx, len(ctx.read(CLASSES)))
        model = source.model.load(device)
        prep = source.preprocessing
        size = prep.input_size
        images = TolerantImages(source.images(), (len(prep.mean), size, size))
        layers = {meta.module: meta.label
                  for meta in store_layers(zarr.open_group(ctx.path(ACTIVATIONS), mode="r"))}
        print(f"[rank] measuring the {len(ids)} images that are a unit's top candidate again "
              f"in float32 on {device}")
        return float32_summaries(model, images, layers, ids, spec.batch_size,
                                 spec.num_workers, device)

    return measure
