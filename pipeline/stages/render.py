"""Stage ``render``: gathers every table and projection, then writes the static atlas."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline import __version__
from pipeline.atomic import read_json
from pipeline.errors import UserError
from pipeline.models.analysed import analysed_model
from pipeline.progress import progress_bar
from pipeline.stages.context import StageContext
from pipeline.stages.registry import get_stage, list_stages, register_stage

if TYPE_CHECKING:
    from pipeline.atlas.context import AtlasContext
    from pipeline.atlas.gather import RunTables
    from pipeline.atlas.parallel import Workers


@register_stage("render", inputs=("prepare", "train", "activations", "rank", "deconv", "occlusion",
                                  "evolution", "invariance"),
                keys=("data.source", "data.root", "model", "render"),
                outputs=("report_dir",),
                loads_weights=True,
                # which model (train.enabled) and which experiments' pages (whether their
                # stages are on) follow from its inputs
                reads=("train.enabled", "train.snapshot_epochs", "evolution.checkpoints",
                       "occlusion.images", "occlusion.files", "invariance.images",
                       "invariance.files"))
def render(ctx: StageContext) -> None:
    """write the static HTML atlas"""
    from pipeline.atlas.parallel import Workers, worker_count

    workflow, layout = ctx.workflow, ctx.layout
    staged = ctx.output(layout.report_dir)
    staged.mkdir(parents=True)
    count = worker_count(workflow.render.workers)
    # Worker processes write the images and the layer and unit pages; the experiments' pages
    # are few and stay in this process.
    with Workers(count, scratch=staged) as workers, _pool_failure_explained(workflow, count):
        # the workers start while this process imports torch and loads the model
        workers.start(("pipeline.atlas.gather", "pipeline.atlas.render"))
        _write(ctx, staged, workers)


def _write(ctx: StageContext, staged: Path, workers: Workers) -> None:
    """Write the atlas into ``staged``, the images and pages on ``workers``."""
    import torch
    import zarr

    from pipeline.atlas.context import with_extras
    from pipeline.atlas.first_layer import first_layer, shows_filters
    from pipeline.atlas.gather import ImageWriter, LayerInput, gather_layers
    from pipeline.atlas.render import write_atlas
    from pipeline.inference.store import store_layers
    from pipeline.interp.projection_meta import ProjectionsMeta
    from pipeline.ranking import read_rank_meta

    workflow, layout = ctx.workflow, ctx.layout
    activations = zarr.open_group(layout.activations, mode="r")
    projections = zarr.open_group(layout.projections, mode="r")
    projected = ProjectionsMeta.from_attrs(projections.attrs)
    tables = _read_tables(layout, activations)
    model = analysed_model(workflow, layout, torch.device("cpu"))
    top_k = read_rank_meta(layout.topk).top_k

    writer = ImageWriter()
    try:
        first = first_layer(model, staged, writer)
    finally:
        writer.close()
    analysed = store_layers(activations)
    first_label = next((meta.label for meta in analysed
                        if first and shows_filters(model, meta.module, first)), None)
    inputs = [LayerInput(meta.label, meta, first if meta.label == first_label else None)
              for meta in analysed]
    units = sum(int(projections[meta.label]["patches"].shape[0]) for meta in analysed)
    with _bar("render images", units, "unit") as bar:
        layers = gather_layers(inputs, tables, layout.projections, staged, top_k,
                               projected.image_size, workers, bar.update)
    context = _atlas_context(workflow, layout, tables, activations, projected, top_k, model,
                             first, layers)
    experiments = [entry for entry in EXPERIMENT_PAGES if get_stage(entry[0]).enabled(workflow)]
    # every page's footer names the figures, the experiments' own pages included
    context = dataclasses.replace(context, figures=(2, *sorted(entry[3] for entry in experiments)))
    extras = [_experiment_pages(entry, ctx, context, tables, staged) for entry in experiments]
    with _bar("render pages", len(layers) + units, "page") as bar:
        write_atlas(with_extras(context, extras), staged, workers, bar.update)


def _atlas_context(workflow, layout, tables: RunTables, activations, projected, top_k: int,
                   model, first, layers) -> AtlasContext:
    """Everything the atlas shows, but the experiments' pages."""
    from pipeline.atlas.context import AtlasContext
    from pipeline.atlas.gather import skipped_images
    from pipeline.data.classes import class_groups
    from pipeline.data.images import read_data_warnings
    from pipeline.inference.store import InferenceSummary, StoreMeta

    metrics = read_json(layout.metrics) or {}  # none when the workflow does not train
    stamps = {stage.name: read_json(layout.stamp(stage.name)) for stage in list_stages()}
    inference = InferenceSummary.from_attrs(activations.attrs)
    return AtlasContext(
        title=workflow.render.title or f"Deconv Atlas: {workflow.name}",
        workflow=workflow.name, model_name=workflow.model.name,
        dataset_name=_dataset_name(workflow),
        n_images=StoreMeta.from_attrs(activations.attrs).n_images,
        n_classes=len(tables.classes), top1=inference.top1,
        top5=inference.top5, val_accuracy=metrics.get("val_accuracy"),
        layers=tuple(layers), filters_image=first.grid if first else None,
        generated=dt.date.today().isoformat(), version=__version__,
        method=projected.methods[0], top_k=top_k, methods=projected.methods,
        parameters=sum(p.numel() for p in model.parameters()),
        input_size=projected.image_size,
        n_readable=inference.n_readable,
        skipped=skipped_images(tables.skipped), n_skipped=len(tables.skipped),
        data_warnings=tuple(warning.message
                            for warning in read_data_warnings(layout.data_warnings)),
        workflow_file=Path(workflow.source).name,
        devices=(("activations", inference.device), ("deconv", projected.device)),
        stage_seconds=tuple((name, float(stamp["seconds"])) for name, stamp in stamps.items()
                            if stamp and "seconds" in stamp and name != "render"),
        class_groups=class_groups(pd.read_parquet(layout.classes)),
        class_names=tuple(tables.classes),
    )


@contextlib.contextmanager
def _bar(desc: str, total: int, unit: str) -> Iterator[Any]:
    bar = progress_bar(desc, total, unit=unit)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def _pool_failure_explained(workflow, count: int) -> Iterator[None]:
    """A worker process that dies (killed for memory, most likely) breaks the whole pool, and
    the library's message names no remedy: say which setting lowers the memory needed."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        yield
    except BrokenProcessPool:
        raise UserError(f"{workflow.source}: a render worker process stopped abruptly (out of "
                        "memory? any error it printed is above); set [render] workers to fewer "
                        f"than {count} (1 renders in this process), then run render "
                        "again") from None


#: The pages beyond Figure 2: (stage, module of pipeline.atlas, function, the paper's figure).
#: Each function takes (its stage's output, the atlas context, the run's tables, the atlas
#: folder), writes its pages and returns a PageExtras (index card, unit links and strips).
#: In the paper's order, which is also the order of their cards on the index.
EXPERIMENT_PAGES = (("evolution", "evolution_pages", "evolution_pages", 4),
                    ("invariance", "invariance_pages", "invariance_pages", 5),
                    ("occlusion", "occlusion_pages", "occlusion_pages", 7))


def _experiment_pages(entry: tuple[str, str, str, int], ctx: StageContext, context,
                      tables: RunTables, staged: Path):
    """Write the pages of one experiment stage (an entry of EXPERIMENT_PAGES); its PageExtras."""
    import importlib

    stage, module, function, _ = entry
    output = get_stage(stage).output_paths(ctx.workflow, ctx.layout)[0]
    write = getattr(importlib.import_module(f"pipeline.atlas.{module}"), function)
    return write(output, context, tables, staged)


def _read_tables(layout, activations) -> RunTables:
    import numpy as np

    from pipeline.atlas.gather import RunTables

    return RunTables(
        classes=[str(name) for name in pd.read_parquet(layout.classes)["name"]],
        manifest=pd.read_parquet(layout.manifest), units=pd.read_parquet(layout.units),
        topk=pd.read_parquet(layout.topk), selectivity=pd.read_parquet(layout.selectivity),
        histograms=pd.read_parquet(layout.histograms),
        skipped=pd.read_parquet(layout.skipped) if layout.skipped.exists() else pd.DataFrame(
            {"image_id": [], "path": [], "reason": []}),
        labels=np.asarray(activations["label"][:]),
        predictions=np.asarray(activations["pred"][:, 0]),
    )


def _dataset_name(workflow) -> str:
    if workflow.data.source == "synthetic":
        return "synthetic shapes (generated)"
    return Path(workflow.data.root).name or "images"
