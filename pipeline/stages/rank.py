"""Stage ``rank``: each unit's top-k images, statistics and class selectivity, as parquet."""

from __future__ import annotations

from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("rank", inputs=("activations",), keys=("rank",),
                outputs=lambda workflow, layout: (layout.topk, layout.units, layout.selectivity,
                                                  layout.histograms))
def rank(ctx: StageContext) -> None:
    """rank every unit's top images with dask"""
    from pipeline.ranking import rank_store

    layout = ctx.layout
    tables = rank_store(layout.activations, ctx.workflow.rank.top_k, scheduler=ctx.client)
    for frame, final in ((tables.topk, layout.topk), (tables.units, layout.units),
                         (tables.selectivity, layout.selectivity),
                         (tables.histograms, layout.histograms)):
        frame.to_parquet(ctx.output(final), index=False)
    units = tables.units
    where = f" on {ctx.client.scheduler.address}" if ctx.client is not None else ""
    print(f"[rank] {len(units)} units in {units['layer'].nunique()} layers{where}, "
          f"{int(units['dead'].sum())} dead")
