"""Stage ``render``: gathers every table and projection, then writes the static atlas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.models.analysed import analysed_described
from pipeline.stages.context import StageContext
from pipeline.stages.registry import get_stage, list_stages, register_stage


@register_stage("render", inputs=("prepare", "train", "activations", "rank", "deconv", "occlusion",
                                  "evolution", "invariance", "sanity"),
                keys=("data.source", "data.root", "model", "render"),
                outputs=("report_dir",),
                loads_weights=True,
                # which model (train.enabled) and which experiments' pages (whether their
                # stages are on) follow from its inputs
                reads=("train.enabled", "train.snapshot_epochs", "evolution.checkpoints",
                       "sanity.enabled",
                       "occlusion.images", "occlusion.files", "invariance.images",
                       "invariance.files"))
def render(ctx: StageContext) -> None:
    """write the static HTML atlas"""
    from pipeline.atlas.build import (
        EXPERIMENT_PAGES,
        AtlasSettings,
        dataset_name,
        pool_failure_explained,
        write_site,
    )
    from pipeline.atlas.parallel import Workers, worker_count

    workflow, layout = ctx.workflow, ctx.layout
    staged = ctx.output(layout.report_dir)
    staged.mkdir(parents=True)
    count = worker_count(workflow.render.workers)
    settings = AtlasSettings(
        title=workflow.render.title or f"Deconv Atlas: {workflow.name}",
        workflow=workflow.name, model_name=workflow.model.label, weights="",
        dataset_name=dataset_name(workflow.data.source, workflow.data.root),
        workflow_file=Path(workflow.source).name,
        stamps={stage.name: layout.stamp(stage.name) for stage in list_stages()},
        experiments=tuple((pages, get_stage(pages.stage).output_paths(workflow, layout)[0])
                          for pages in EXPERIMENT_PAGES
                          if get_stage(pages.stage).enabled(workflow)),
        sanity=get_stage("sanity").enabled(workflow),
        picture_budget=workflow.render.picture_budget * 1e6)
    with Workers(count, scratch=staged) as workers, pool_failure_explained(workflow.source, count):
        # the workers start while this process imports torch and loads the model
        workers.start(("pipeline.atlas.gather", "pipeline.atlas.render"))
        import torch

        model, weights = analysed_described(workflow, layout, torch.device("cpu"))
        write_site(layout, model, dataclasses.replace(settings, weights=weights), staged,
                   workers)
