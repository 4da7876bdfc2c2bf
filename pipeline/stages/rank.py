"""Stage ``rank``: each unit's top-k images, statistics and class selectivity, as parquet."""

from __future__ import annotations

from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: topk.parquet records top_k in its metadata (pipeline.ranking.meta)
@register_stage("rank", inputs=("activations",), keys=("rank",), revision=2,
                outputs=("topk", "units", "selectivity", "histograms"))
def rank(ctx: StageContext) -> None:
    """rank every unit's top images with dask"""
    from pipeline.ranking import RankMeta, rank_store, write_topk

    layout, top_k = ctx.layout, ctx.workflow.rank.top_k
    tables = rank_store(layout.activations, top_k, scheduler=ctx.client)
    write_topk(tables.topk, ctx.output(layout.topk), RankMeta(top_k))
    for frame, final in ((tables.units, layout.units), (tables.selectivity, layout.selectivity),
                         (tables.histograms, layout.histograms)):
        frame.to_parquet(ctx.output(final), index=False)
    units = tables.units
    where = f" on {ctx.client.scheduler.address}" if ctx.client is not None else ""
    print(f"[rank] {len(units)} units in {units['layer'].nunique()} layers{where}, "
          f"{int(units['dead'].sum())} dead")
