"""Stage ``rank``: each unit's top-k images, statistics and class selectivity, as parquet."""

from __future__ import annotations

from pipeline.catalog import ACTIVATIONS, HISTOGRAMS, SELECTIVITY, TOPK, UNITS
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: topk.parquet records top_k in its metadata (pipeline.ranking.meta)
@register_stage("rank", reads=(ACTIVATIONS,), writes=(TOPK, UNITS, SELECTIVITY, HISTOGRAMS),
                config=("rank",), revision=2)
def rank(ctx: StageContext) -> None:
    """rank every unit's top images with dask"""
    from pipeline.ranking import RankMeta, rank_store, write_topk

    top_k = ctx.workflow.rank.top_k
    tables = rank_store(ctx.path(ACTIVATIONS), top_k, scheduler=ctx.client)
    write_topk(tables.topk, ctx.output(TOPK), RankMeta(top_k))
    for frame, item in ((tables.units, UNITS), (tables.selectivity, SELECTIVITY),
                        (tables.histograms, HISTOGRAMS)):
        ctx.write(item, frame)
    units = tables.units
    where = f" on {ctx.client.scheduler.address}" if ctx.client is not None else ""
    print(f"[rank] {len(units)} units in {units['layer'].nunique()} layers{where}, "
          f"{int(units['dead'].sum())} dead")
