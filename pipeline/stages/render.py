"""Stage ``render``: gathers every table and projection, then writes the static atlas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.catalog import (
    ACTIVATIONS,
    ATLAS,
    CLASSES,
    DATA_WARNINGS,
    EVOLUTION,
    FEATUREVIS,
    HISTOGRAMS,
    INPUT_DEPENDENCE,
    INVARIANCE,
    MANIFEST,
    METRICS,
    MODEL,
    MODEL_FILE,
    OCCLUSION,
    PROJECTIONS,
    RANDOMISED_PROJECTIONS,
    SANITY,
    SELECTIVITY,
    SKIPPED,
    TOPK,
    UNITS,
    WEIGHTS_FILE,
    Artifact,
)
from pipeline.stages.context import StageContext
from pipeline.stages.registry import list_stages, register_stage, stage_writing


@register_stage("render",
                reads=(MANIFEST, CLASSES, DATA_WARNINGS, MODEL, WEIGHTS_FILE, MODEL_FILE, METRICS,
                       ACTIVATIONS, SKIPPED, TOPK, UNITS, SELECTIVITY, HISTOGRAMS, PROJECTIONS,
                       FEATUREVIS, OCCLUSION, EVOLUTION, INVARIANCE, SANITY, INPUT_DEPENDENCE,
                       RANDOMISED_PROJECTIONS),
                writes=(ATLAS,),
                config=("data.source", "data.root", "model", "render"),
                # which model (train.enabled) and which experiments' pages (whether their
                # stages are on) follow from its inputs
                unkeyed=("train.enabled", "train.snapshot_epochs", "evolution.checkpoints",
                         "sanity.enabled", "featurevis.enabled",
                         "occlusion.images", "occlusion.files", "invariance.images",
                         "invariance.files"))
def render(ctx: StageContext) -> None:
    """write the static HTML atlas"""
    from pipeline.atlas.parallel import Workers, worker_count
    from pipeline.atlas.render_run import (
        EVOLUTION_PAGES,
        INVARIANCE_PAGES,
        OCCLUSION_PAGES,
        WORKER_MODULES,
        AtlasSettings,
        RunFiles,
        dataset_name,
        pool_failure_explained,
        write_site,
    )
    from pipeline.run_inputs import model_source

    workflow, layout = ctx.workflow, ctx.layout
    staged = ctx.output(ATLAS)
    staged.mkdir(parents=True)
    count = worker_count(workflow.render.workers)
    experiments = ((EVOLUTION_PAGES, EVOLUTION), (INVARIANCE_PAGES, INVARIANCE),
                   (OCCLUSION_PAGES, OCCLUSION))
    settings = AtlasSettings(
        title=workflow.render.title or f"Deconv Atlas: {workflow.name}",
        workflow=workflow.name, model_name=workflow.model.label, weights="",
        dataset_name=dataset_name(workflow.data.source, workflow.data.root),
        workflow_file=Path(workflow.source).name,
        stamps={stage.name: layout.stamp(stage.name) for stage in list_stages()},
        experiments=tuple((pages, ctx.path(output)) for pages, output in experiments
                          if _ran(output, workflow)),
        sanity=_ran(SANITY, workflow),
        picture_budget=workflow.render.picture_budget * 1e6)
    files = RunFiles(**{item.name: ctx.path(item) for item in (
        MANIFEST, CLASSES, DATA_WARNINGS, METRICS, ACTIVATIONS, SKIPPED, TOPK, UNITS, SELECTIVITY,
        HISTOGRAMS, PROJECTIONS, SANITY, INPUT_DEPENDENCE, RANDOMISED_PROJECTIONS)},
        # an old run's store is not shown once the stage is off
        featurevis=ctx.path(FEATUREVIS) if _ran(FEATUREVIS, workflow) else None)
    source = model_source(workflow, layout, len(ctx.read(CLASSES)))
    with Workers(count, scratch=staged) as workers, pool_failure_explained(workflow.source, count):
        # the workers start while this process imports torch and loads the model
        workers.start(WORKER_MODULES)
        import torch

        model, weights = source.load_described(torch.device("cpu"))
        write_site(files, model, dataclasses.replace(settings, weights=weights), staged,
                   workers)


def _ran(item: Artifact, workflow) -> bool:
    """Whether the stage writing ``item`` is on in this workflow."""
    return stage_writing(item).enabled(workflow)
