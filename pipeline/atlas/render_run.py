"""The whole atlas of one run: gather every table and projection, then write the pages.

The render stage hands over the files of the run it reads (:class:`RunFiles`), the model, and
what only it can know (which experiment stages are on and where they wrote, the stamps'
paths); the tables and stores are read here.
Worker processes write the images and the layer and unit pages; the experiments' pages are
few and stay in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline import __version__
from pipeline.atomic import read_json
from pipeline.errors import UserError
from pipeline.progress import progress_bar
from pipeline.schemas import Classes, Histograms, Manifest, Selectivity, Skipped, Topk, Units

if TYPE_CHECKING:
    from torch import nn

    from pipeline.atlas.context import AtlasContext, PageExtras
    from pipeline.atlas.gather import RunTables
    from pipeline.atlas.parallel import Workers


#: (main_page, write): how an experiment names its main page from its stage's output without
#: writing anything, and the function that writes its pages (its module imported when used).
PageFunctions = tuple[Callable[..., str], Callable[..., "PageExtras"]]


@dataclass(frozen=True)
class ExperimentPages:
    """The pages of one experiment beyond Figure 2: its name (its stage's), the paper's
    figure, and its page functions. ``write(output, context, tables, atlas folder)`` writes
    the pages from the stage's output and returns a PageExtras (index card, unit links and
    strips)."""

    name: str
    figure: int
    functions: Callable[[], PageFunctions]


def _evolution() -> PageFunctions:
    from pipeline.atlas.evolution_pages import evolution_pages, main_page

    return main_page, evolution_pages


def _invariance() -> PageFunctions:
    from pipeline.atlas.invariance_pages import invariance_pages, main_page

    return main_page, invariance_pages


def _occlusion() -> PageFunctions:
    from pipeline.atlas.occlusion_pages import main_page, occlusion_pages

    return main_page, occlusion_pages


#: The render stage passes those of its run in the paper's order, which is also the order of
#: their cards on the index.
EVOLUTION_PAGES = ExperimentPages("evolution", 4, _evolution)
INVARIANCE_PAGES = ExperimentPages("invariance", 5, _invariance)
OCCLUSION_PAGES = ExperimentPages("occlusion", 7, _occlusion)


@dataclass(frozen=True)
class RunFiles:
    """The run's files the atlas reads (the sanity ones only when that stage ran; the
    featurevis store, None when that stage is off)."""

    manifest: Path
    classes: Path
    data_warnings: Path
    metrics: Path
    activations: Path
    skipped: Path
    topk: Path
    units: Path
    selectivity: Path
    histograms: Path
    projections: Path
    sanity: Path
    input_dependence: Path
    randomised_projections: Path
    featurevis: Path | None = None


@dataclass(frozen=True)
class AtlasSettings:
    """What the atlas says about the run that its tables do not hold."""

    title: str
    workflow: str
    model_name: str
    dataset_name: str
    workflow_file: str
    weights: str  # which weights were analysed: published ones, or a file, its entry and prefix
    stamps: dict[str, Path]  # stage -> its stamp file (for the stages' timings)
    experiments: tuple[tuple[ExperimentPages, Path], ...]  # the stages on, with their output
    sanity: bool = False  # the sanity stage ran: its figures and pictures are shown
    picture_budget: float = 0.0  # pixels of projection pictures ([render] picture_budget)


def with_sanity(layers: list, table: Path, input_dependence: Path) -> list:
    """The layers with the sanity stage's figures and its one-sentence reading per method."""
    from pipeline.atlas.context import SanityRow
    from pipeline.sanity import read_sanity, reading

    figures = read_sanity(table, input_dependence)
    out = []
    for layer in layers:
        rows = []
        for method in figures.methods:
            headline = figures.headline.get((layer.label, method))
            inputs = figures.inputs.get((layer.label, method))
            if headline is None:
                continue
            steps = tuple((point.randomised_label or point.randomised_from,
                           point.similarity.spearman, point.similarity.ssim)
                          for point in figures.cascade.get((layer.label, method), ()))
            rows.append(SanityRow(
                method, headline.spearman, headline.ssim,
                inputs.between_projections if inputs else float("nan"),
                inputs.with_patches if inputs else float("nan"), headline.n,
                reading(layer.label, figures, method), headline.empty, steps))
        out.append(dataclasses.replace(layer, sanity=tuple(rows)))
    return out


def dataset_name(source: str, root: str) -> str:
    """The data set as the atlas names it: the synthetic one, or the data folder's name."""
    if source == "synthetic":
        return "synthetic shapes (generated)"
    return Path(root).name or "images"


#: What the workers of :func:`write_site` import when they start (their tasks live there). They
#: import neither torch nor dask (a test checks): that was 3-4 s of CPU per worker per render.
WORKER_MODULES = ("pipeline.atlas.gather", "pipeline.atlas.render")


def write_site(files: RunFiles, model: nn.Module, settings: AtlasSettings, staged: Path,
               workers: Workers) -> None:
    """Write the atlas of the run whose ``files`` these are into ``staged``, the images and
    pages on ``workers``."""
    import zarr

    from pipeline.atlas.context import with_extras
    from pipeline.atlas.first_layer import first_layer, shows_filters
    from pipeline.atlas.gather import LayerInput, gather_layers
    from pipeline.atlas.navigation import experiment_links
    from pipeline.atlas.render import write_atlas
    from pipeline.atlas.writer import ImageWriter
    from pipeline.inference.store import store_layers
    from pipeline.interp.projection_meta import ProjectionsMeta
    from pipeline.labelled import array_in, group_in
    from pipeline.ranking import read_rank_meta

    activations = zarr.open_group(files.activations, mode="r")
    projections = zarr.open_group(files.projections, mode="r")
    projected = ProjectionsMeta.from_attrs(projections.attrs)
    tables = read_run_tables(files, activations)
    top_k = read_rank_meta(files.topk).top_k

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
    units = sum(int(array_in(group_in(projections, meta.label), "patches").shape[0])
                for meta in analysed)
    with _bar("render images", units, "unit") as bar:
        layers = gather_layers(inputs, tables, files.projections, staged, top_k,
                               projected.image_size, workers, bar.update,
                               files.randomised_projections if settings.sanity else None,
                               settings.picture_budget)
    if settings.sanity:
        layers = with_sanity(layers, files.sanity, files.input_dependence)
    recipe = None
    if files.featurevis is not None:
        from pipeline.atlas.featurevis_pictures import with_optimised

        with _bar("render optimised images", _stored_units(files.featurevis), "unit") as bar:
            layers, recipe = with_optimised(layers, files.featurevis, staged, workers,
                                            bar.update)
    context = _atlas_context(settings, files, tables, activations, projected, top_k, model,
                             first, layers, _input_channels(projections, analysed))
    # every page's footer names the figures and its header links the experiments, the
    # experiments' own pages included: both are known before any page is written
    context = dataclasses.replace(
        context, figures=(2, *sorted(pages.figure for pages, _ in settings.experiments)),
        experiment_nav=experiment_links(settings.experiments, context), optimisation=recipe)
    extras = [_experiment_pages(pages, output, context, tables, staged)
              for pages, output in settings.experiments]
    with _bar("render pages", len(layers) + units, "page") as bar:
        write_atlas(with_extras(context, extras), staged, workers, bar.update)


def _atlas_context(settings: AtlasSettings, files: RunFiles, tables: RunTables, activations,
                   projected, top_k: int, model, first, layers,
                   input_channels: int = 3) -> AtlasContext:
    """Everything the atlas shows, but the experiments' pages."""
    from pipeline.atlas.context import AtlasContext
    from pipeline.atlas.gather import skipped_images
    from pipeline.data.classes import class_groups
    from pipeline.data.images import read_data_warnings
    from pipeline.inference.store import InferenceSummary, StoreMeta

    metrics = read_json(files.metrics) or {}  # none when the workflow does not train
    stamps = {stage: read_json(path) for stage, path in settings.stamps.items()}
    inference = InferenceSummary.from_attrs(activations.attrs)
    return AtlasContext(
        title=settings.title, workflow=settings.workflow, model_name=settings.model_name,
        weights=settings.weights,
        dataset_name=settings.dataset_name,
        n_images=StoreMeta.from_attrs(activations.attrs).n_images,
        n_classes=len(tables.classes), top1=inference.top1,
        top5=inference.top5, val_accuracy=metrics.get("val_accuracy"),
        layers=tuple(layers), filters_image=first.grid if first else None,
        generated=dt.date.today().isoformat(), version=__version__,
        method=projected.methods[0], top_k=top_k, methods=projected.methods,
        parameters=sum(p.numel() for p in model.parameters()),
        input_size=projected.image_size,
        input_channels=input_channels,
        n_readable=inference.n_readable,
        skipped=skipped_images(tables.skipped), n_skipped=len(tables.skipped),
        data_warnings=tuple(warning.message
                            for warning in read_data_warnings(files.data_warnings)),
        workflow_file=settings.workflow_file,
        devices=_devices(stamps, inference.device, projected.device),
        stage_seconds=tuple((name, float(stamp["seconds"])) for name, stamp in stamps.items()
                            if stamp and "seconds" in stamp and name != "render"),
        class_groups=class_groups(Classes.read(files.classes)),
        class_names=tuple(tables.classes),
    )


def _devices(stamps: dict, activations: str, deconv: str) -> tuple[tuple[str, str], ...]:
    """What each stage computed with, as its stamp records it (``cuda:0, float32, bf16
    autocast``); a run stamped before stamps recorded it shows the devices its stores name."""
    from pipeline.device import Compute

    found = tuple((name, Compute.from_json(stamp["compute"]).describe())
                  for name, stamp in stamps.items() if stamp and "compute" in stamp)
    return found or (("activations", activations), ("deconv", deconv))


def _stored_units(featurevis: Path) -> int:
    """The units the featurevis store holds, over all its layers."""
    import zarr

    from pipeline.labelled import array_in

    root = zarr.open_group(featurevis, mode="r")
    return sum(int(array_in(group, "unit").shape[0]) for _, group in root.groups())


def _input_channels(projections, analysed) -> int:
    """The channels of the network's input, as the projections store keeps its pictures."""
    return int(projections[analysed[0].label]["patches"].shape[-1]) if analysed else 3


@contextlib.contextmanager
def _bar(desc: str, total: int, unit: str) -> Iterator[Any]:
    bar = progress_bar(desc, total, unit=unit)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def pool_failure_explained(workflow_source: str, count: int) -> Iterator[None]:
    """A worker process that dies (killed for memory, most likely) breaks the whole pool, and
    the library's message names no remedy: say which setting lowers the memory needed."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        yield
    except BrokenProcessPool:
        raise UserError(f"{workflow_source}: a render worker process stopped abruptly (out of "
                        "memory? any error it printed is above); set [render] workers to fewer "
                        f"than {count} (1 renders in this process), then run render "
                        "again") from None


def _experiment_pages(pages: ExperimentPages, output: Path, context: AtlasContext,
                      tables: RunTables, staged: Path) -> PageExtras:
    """Write the pages of one experiment from its stage's ``output``; their PageExtras."""
    _, write = pages.functions()
    return write(output, context, tables, staged)


def read_run_tables(files: RunFiles, activations) -> RunTables:
    """The run's tables the atlas draws from, read once into memory."""
    import numpy as np

    from pipeline.atlas.gather import RunTables

    return RunTables(
        classes=[str(name) for name in Classes.read(files.classes)[Classes.name]],
        manifest=Manifest.read(files.manifest), units=Units.read(files.units),
        topk=Topk.read(files.topk), selectivity=Selectivity.read(files.selectivity),
        histograms=Histograms.read(files.histograms),
        skipped=Skipped.read(files.skipped) if files.skipped.exists() else pd.DataFrame(
            {"image_id": [], "path": [], "reason": []}),
        labels=np.asarray(activations["label"][:]),
        predictions=np.asarray(activations["pred"][:, 0]),
    )
