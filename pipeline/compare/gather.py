"""Reading two finished runs into a :class:`~pipeline.compare.context.Comparison`, and writing
the pictures it links (filter grids, unit tiles) into the site's ``a/`` and ``b/`` folders.

The pictures are made by the atlas's own pieces (its Figure 6 grid, its Figure 2 tiles and its
contrast), so a unit looks the same here as in either run's atlas; they are composed afresh from
the runs' stores rather than copied from the atlases, which may not exist or be older.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.atomic import read_json
from pipeline.compare.context import (
    Comparison,
    FilterGrid,
    LayerStats,
    RunFacts,
    RunSide,
    ShownLayer,
)
from pipeline.models.loading import ModelSource
from pipeline.ranking.meta import read_rank_meta
from pipeline.schemas import Classes, Units

if TYPE_CHECKING:
    from pipeline.atlas.first_layer import FirstLayer
    from pipeline.atlas.writer import ImageWriter
    from pipeline.config import ModelConfig, TrainConfig

SHOWN_UNITS = 24  # units of the second layer shown per run (the most selective)


@dataclass(frozen=True)
class RunInputs:
    """One finished run as compare reads it: what it is called, its files, its model."""

    name: str
    workflow_file: str
    model_name: str
    weights: str  # where the analysed weights came from (see weights_origin)
    dataset_name: str
    activations: Path
    projections: Path
    classes: Path
    units: Path
    topk: Path
    metrics: Path
    model: ModelSource


def gather(first: RunInputs, second: RunInputs, out_dir: Path,
           units_shown: int = SHOWN_UNITS) -> Comparison:
    """Read both runs, write their pictures under ``out_dir`` and describe the site."""
    from pipeline.atlas.writer import ImageWriter

    writer = ImageWriter()
    try:
        a = run_side("A", first, out_dir, writer, units_shown)
        b = run_side("B", second, out_dir, writer, units_shown)
    finally:
        writer.close()
    return Comparison(title=f"{a.facts.name} vs {b.facts.name}", a=a, b=b,
                      generated=dt.date.today().isoformat(), version=__version__)


def run_side(side: str, run: RunInputs, out_dir: Path, writer: ImageWriter,
             units_shown: int) -> RunSide:
    """One run's facts, filter grid, layer statistics and second-layer tiles; its pictures go
    to ``out_dir/<side in lower case>/``."""
    import torch
    import zarr

    from pipeline.atlas.first_layer import first_layer

    folder = side.lower()
    activations = zarr.open_group(run.activations, mode="r")
    projections = zarr.open_group(run.projections, mode="r")
    classes = [str(name) for name in Classes.read(run.classes)[Classes.name]]
    units = Units.read(run.units)
    model = run.model.load(torch.device("cpu"))
    labels = [str(label) for label in cast(list, activations.attrs["layers"])]
    first = first_layer(model, out_dir / folder, writer)
    layers = tuple(layer_stats(label, activations, units) for label in labels)
    second = None
    if len(labels) > 1:
        second = shown_layer(labels[1], activations, projections[labels[1]], units, classes,
                             out_dir, f"{folder}/tiles", writer, units_shown)
    return RunSide(side=side, facts=run_facts(run, activations, projections, model,
                                              len(classes)),
                   filters=_filter_grid(first, folder, model, activations, labels, units),
                   layers=layers, second=second)


def run_facts(run: RunInputs, activations: Any, projections: Any, model: Any,
              n_classes: int) -> RunFacts:
    """What the index shows of a run, side by side with the other."""
    metrics = read_json(run.metrics) or {}
    attrs = activations.attrs
    return RunFacts(
        name=run.name, workflow_file=run.workflow_file, model_name=run.model_name,
        parameters=sum(p.numel() for p in model.parameters()),
        input_size=int(projections.attrs.get("image_size", 0)) or None,
        weights=run.weights, dataset_name=run.dataset_name,
        n_images=int(attrs["n_images"]), n_readable=attrs.get("n_readable"),
        n_classes=n_classes, top1=attrs.get("top1"), top5=attrs.get("top5"),
        val_accuracy=metrics.get("val_accuracy"),
        method=str(projections.attrs["methods"][0]),
        top_k=read_rank_meta(run.topk).top_k)  # rank's record, the one after rank


def weights_origin(spec: ModelConfig, train: TrainConfig) -> str:
    """Where the analysed weights came from, in the order the model's loading picks them; a
    file by its name only."""
    from pipeline.models.timm_models import is_timm_name

    if spec.weights and not spec.checkpoint:
        return f"{'timm' if is_timm_name(spec.name) else 'torchvision'} {spec.weights}"
    if spec.checkpoint:
        return f"checkpoint {Path(spec.checkpoint).name}"
    return f"trained in this run (seed {train.seed}, {train.epochs} epochs)"


def _filter_grid(first: FirstLayer | None, folder: str, model: Any, activations: Any,
                 labels: list[str], units: pd.DataFrame) -> FilterGrid | None:
    """The Figure 6 grid ``first_layer`` wrote, with the analysed layer whose units are the
    filters (and its dead units), if one is."""
    from pipeline.atlas.first_layer import shows_filters

    if first is None or first.grid is None:
        return None
    label = next((label for label in labels
                  if shows_filters(model, activations[label].attrs["module"], first)), None)
    dead = int(units.loc[units["layer"] == label, "dead"].sum()) if label else None
    scales = np.asarray(first.scales, dtype=np.float64)
    return FilterGrid(image=f"{folder}/{first.grid}", module=first.module,
                      n_filters=len(first.filters),
                      kernel=(int(first.filters.shape[1]), int(first.filters.shape[2])),
                      scale_min=float(scales.min()), scale_median=float(np.median(scales)),
                      scale_max=float(scales.max()), layer=label, n_dead=dead)


def layer_stats(label: str, activations: Any, units: pd.DataFrame) -> LayerStats:
    """A layer's dead units, selectivity and activation statistics (over its live units)."""
    rows = units[units["layer"] == label]
    live = rows[~rows["dead"]]
    means = mean_activations(activations, label)[live["unit"].to_numpy()]

    def stat(values: Any, how: Any) -> float | None:
        return float(how(values)) if len(values) else None

    return LayerStats(
        label=label, module=str(activations[label].attrs["module"]), n_units=len(rows),
        n_dead=int(rows["dead"].sum()),
        selectivity=stat(live["top_class_share"], np.mean),
        peak_mean=stat(live["peak"], np.mean), peak_median=stat(live["peak"], np.median),
        activation_mean=stat(means, np.mean), activation_median=stat(means, np.median),
        active_mean=stat(live["frac_active"], np.mean))


def mean_activations(activations: Any, label: str) -> np.ndarray:
    """Each unit's mean activation over the readable images (the store keeps each image's mean
    over positions), read chunk by chunk: ImageNet's are hundreds of megabytes a layer."""
    store = activations[label]["mean"]
    readable = np.asarray(activations["pred"][:, 0]) >= 0
    total = np.zeros(store.shape[1], np.float64)
    step = int(store.chunks[0])
    for start in range(0, store.shape[0], step):
        keep = readable[start:start + step]
        if keep.any():
            total += np.asarray(store[start:start + step], np.float64)[keep].sum(axis=0)
    return total / max(1, int(readable.sum()))


def shown_layer(label: str, activations: Any, group: Any, units: pd.DataFrame,
                classes: list[str], out_dir: Path, tiles: str, writer: ImageWriter,
                units_shown: int) -> ShownLayer:
    """The layer's most selective live units, in the order of the atlas's index strips, each
    with its Figure 2 tile written to ``out_dir/tiles/<label>/``."""
    from pipeline.atlas.context import LayerEntry, UnitEntry
    from pipeline.atlas.gather import dominant_class, shown_cells, shown_projections
    from pipeline.atlas.tiles import compose_unit_tile, grid_side, tile_scale

    rows = units[units["layer"] == label].sort_values("unit")
    projections, patches = group["projections"], group["patches"]
    top_k = int(patches.shape[1])
    grid = grid_side(top_k)
    cell_hw = shown_cells(patches[:1, 0]).shape[1:3] if patches.shape[0] else (1, 1)
    scale = tile_scale(cell_hw[0])
    suffix = ".webp"  # lossless: the projections are the engine's, pixel for pixel
    priors = _class_priors(activations, len(classes))
    entries = []
    for row in rows.itertuples(index=False):
        top = int(row.top_class)
        name = classes[top] if 0 <= top < len(classes) else None
        share, counted = float(row.top_class_share), int(row.n_selectivity)
        named = name if top >= 0 and dominant_class(share, counted, priors[top]) else None
        live = not row.dead and int(row.n_top) > 0
        entries.append(UnitEntry(
            unit=int(row.unit), dead=bool(row.dead), peak=float(row.peak), top_class=name,
            n_images=min(int(row.n_top), top_k),
            tile=f"{tiles}/{label}/{int(row.unit):04d}{suffix}" if live else None,
            top_class_share=share, n_selectivity=counted, named_class=named,
            frac_active=float(row.frac_active)))
    meta = activations[label].attrs
    layer = LayerEntry(label=label, module=str(meta["module"]),
                       out_shape=(int(meta["channels"]), int(meta["height"]),
                                  int(meta["width"])),
                       receptive_field=int(meta["receptive_field"][0]), units=tuple(entries),
                       preview=None)
    picked = layer.most_selective(units_shown if units_shown > 0 else len(entries))
    for unit in picked:
        assert unit.tile is not None  # most_selective picks live units, which have a tile
        shown = unit.n_images
        # the atlas's linear curve, cell size and channels (pipeline.atlas.gather)
        pictures = shown_projections(projections[0, unit.unit, :shown])
        writer.save(compose_unit_tile(pictures, shown_cells(patches[unit.unit, :shown]),
                                      scale=scale, grid=grid), out_dir / unit.tile)
    n_live = sum(1 for unit in entries if unit.tile)
    return ShownLayer(label=label, module=layer.module, receptive_field=layer.receptive_field,
                      n_units=len(entries), n_dead=layer.n_dead, n_live=n_live, units=picked)


def _class_priors(activations: Any, n_classes: int) -> np.ndarray:
    """Each class's share of the analysed images: what a class-blind unit's top images hold."""
    labels = np.asarray(activations["label"][:])
    readable = (np.asarray(activations["pred"][:, 0]) >= 0) & (labels >= 0)
    counts = np.bincount(labels[readable], minlength=n_classes)[:n_classes]
    return counts / max(1, counts.sum())
