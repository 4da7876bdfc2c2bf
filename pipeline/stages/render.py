"""Stage ``render``: gathers every table and projection, then writes the static atlas."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline import __version__
from pipeline.atomic import read_json
from pipeline.progress import progress
from pipeline.stages.context import StageContext
from pipeline.stages.inputs import analysed_model
from pipeline.stages.registry import register_stage

if TYPE_CHECKING:
    import zarr
    from torch import nn

    from pipeline.atlas.context import LayerEntry


TILE_IMAGES = 9  # a Figure 2 tile is a 3x3 grid; a larger top_k still ranks and projects more


@register_stage("render", inputs=("prepare", "train", "activations", "rank", "deconv"),
                sections=("render",))
def render(ctx: StageContext) -> None:
    """write the static HTML atlas"""
    import torch
    import zarr

    from pipeline.atlas.context import AtlasContext
    from pipeline.atlas.render import write_atlas

    workflow, layout = ctx.workflow, ctx.layout
    staged = ctx.output(layout.report_dir)
    staged.mkdir(parents=True)
    classes = pd.read_parquet(layout.classes)["name"].tolist()
    units = pd.read_parquet(layout.units)
    activations = zarr.open_group(layout.activations, mode="r")
    projections = zarr.open_group(layout.projections, mode="r")
    model = analysed_model(workflow, layout, torch.device("cpu"))

    layers = []
    for label in progress(activations.attrs["layers"], "render", unit="layer"):
        layers.append(_layer_entry(label, activations[label].attrs, projections[label],
                                   units[units["layer"] == label], classes, staged))
    metrics = read_json(layout.metrics) or {}
    context = AtlasContext(
        title=workflow.render.title or f"Deconv Atlas: {workflow.name}",
        workflow=workflow.name, model_name=workflow.model.name,
        dataset_name=_dataset_name(workflow), n_images=int(activations.attrs["n_images"]),
        n_classes=len(classes), top1=activations.attrs.get("top1"),
        top5=activations.attrs.get("top5"), val_accuracy=metrics.get("val_accuracy"),
        layers=tuple(layers), filters_image=_write_filters(model, staged),
        generated=dt.date.today().isoformat(), version=__version__,
        method=str(projections.attrs["method"]), top_k=int(projections.attrs["top_k"]),
    )
    write_atlas(context, staged)


def _layer_entry(label: str, meta, group: zarr.Group, units: pd.DataFrame, classes: list[str],
                 out_dir: Path) -> LayerEntry:
    """Write one tile per live unit (Figure 2: projections beside patches) and describe them."""
    from pipeline.atlas.context import LayerEntry, UnitEntry
    from pipeline.atlas.tiles import compose_unit_tile, save_image, tile_scale

    projections, patches = group["projections"][:], group["patches"][:]
    scale = tile_scale(projections.shape[2])
    entries = []
    for row in units.sort_values("unit").itertuples(index=False):
        tile = None
        if not row.dead and row.n_top > 0:
            tile = f"tiles/{label}/unit_{row.unit:04d}.png"
            shown = min(int(row.n_top), TILE_IMAGES)
            image = compose_unit_tile(projections[row.unit, :shown], patches[row.unit, :shown],
                                      scale=scale)
            save_image(image, out_dir / tile)
        entries.append(UnitEntry(
            unit=int(row.unit), dead=bool(row.dead), peak=float(row.peak),
            top_class=classes[row.top_class] if row.top_class >= 0 else None,
            n_images=int(row.n_top), tile=tile))
    live = [entry for entry in entries if entry.tile]
    preview = max(live, key=lambda entry: entry.peak).tile if live else None
    return LayerEntry(label=label, module=str(meta["module"]),
                      out_shape=(int(meta["channels"]), int(meta["height"]), int(meta["width"])),
                      receptive_field=int(meta["receptive_field"][0]), units=tuple(entries),
                      preview=preview)


def _write_filters(model: nn.Module, out_dir: Path) -> str | None:
    """The first convolution's filters as an image grid (the paper's Figure 6 view)."""
    from torch import nn

    from pipeline.atlas.tiles import filter_grid, save_image

    first = next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)
    if first is None or first.in_channels != 3:
        return None
    weights = first.weight.detach().cpu().numpy()
    save_image(filter_grid(weights, scale=max(1, 32 // weights.shape[-1])),
               out_dir / "filters.png")
    return "filters.png"


def _dataset_name(workflow) -> str:
    if workflow.data.source == "synthetic":
        return "synthetic shapes (generated)"
    return Path(workflow.data.root).name or "images"
