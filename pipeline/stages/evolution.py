"""Stage ``evolution`` (Figure 4): each unit's strongest activation at each training snapshot.

The work and the store's layout are in :mod:`pipeline.experiments.evolution`; which weights are
compared is :mod:`pipeline.experiments.snapshots`.
"""

from __future__ import annotations

import functools

import pandas as pd

from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: dimension names and coordinates (pipeline.labelled)
@register_stage("evolution", inputs=("prepare", "train", "activations"), revision=2,
                keys=("data.source", "data.root", "model", "evolution", "train.snapshot_epochs",
                      "activations.layers"),
                outputs=("evolution",), reads_images=True,
                reads_checkpoints=True,
                enabled=lambda workflow: bool(workflow.evolution.checkpoints)
                or (workflow.train.enabled and bool(workflow.train.snapshot_epochs)))
def evolution(ctx: StageContext) -> None:
    """project each unit's strongest activation at each training snapshot (Figure 4)"""
    import zarr

    from pipeline.atomic import zarr_writes_settled
    from pipeline.device import resolve_device
    from pipeline.experiments.evolution import EvolutionLayer, searched_images, write_evolution
    from pipeline.experiments.snapshots import load_snapshot, snapshot_files
    from pipeline.inference.store import store_layers
    from pipeline.models.analysed import analysed_images
    from pipeline.models.preprocessing import preprocessing
    from pipeline.preflight import model_classes

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.evolution
    device = resolve_device(spec.device)
    manifest = pd.read_parquet(layout.manifest)
    activations = zarr.open_group(layout.activations, mode="r")
    layers = [EvolutionLayer(meta.label, meta.module, meta.channels, meta.width)
              for meta in store_layers(activations)]
    ids = searched_images(activations["pred"][:, 0] >= 0, spec.images)
    classes = model_classes(workflow, len(pd.read_parquet(layout.classes)))
    snapshots = [(snapshot.label, functools.partial(load_snapshot, workflow, snapshot, classes,
                                                    device))
                 for snapshot in snapshot_files(workflow, layout)]
    dataset = analysed_images(workflow, layout, manifest)
    with zarr_writes_settled():
        write_evolution(ctx.output(layout.evolution), snapshots, layers,
                        lambda i: dataset[i][0], ids, preprocessing(workflow), spec.batch_size,
                        device)
    print(f"[evolution] {len(snapshots)} snapshots, {len(ids)} images searched, "
          f"{sum(layer.channels for layer in layers)} units on {device}")
