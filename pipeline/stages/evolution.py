"""Stage ``evolution`` (Figure 4): each unit's strongest activation at each training snapshot.

The work and the store's layout are in :mod:`pipeline.experiments.evolution_run`; which weights are
compared is :mod:`pipeline.experiments.snapshots`.
"""

from __future__ import annotations

import functools

from pipeline.catalog import (
    ACTIVATIONS,
    CLASSES,
    EVOLUTION,
    EVOLUTION_CHECKPOINTS,
    IMAGES,
    MANIFEST,
    MODEL_FILE,
    SNAPSHOTS,
    SYNTHETIC_DATA,
)
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: dimension names and coordinates (pipeline.labelled)
@register_stage("evolution", revision=2,
                reads=(MANIFEST, CLASSES, SNAPSHOTS, EVOLUTION_CHECKPOINTS, MODEL_FILE,
                       ACTIVATIONS, IMAGES, SYNTHETIC_DATA),
                writes=(EVOLUTION,),
                config=("data.source", "data.root", "model", "evolution",
                        "train.snapshot_epochs", "activations.modules"),
                enabled=lambda workflow: bool(workflow.evolution.checkpoints)
                or (workflow.train.enabled and bool(workflow.train.snapshot_epochs)))
def evolution(ctx: StageContext) -> None:
    """project each unit's strongest activation at each training snapshot (Figure 4)"""
    from pipeline.atomic import zarr_writes_settled
    from pipeline.data.decoded import DecodedImages
    from pipeline.experiments.evolution_run import EvolutionLayer, searched_images, write_evolution
    from pipeline.experiments.snapshots import load_snapshot
    from pipeline.inference.store import store_layers
    from pipeline.preflight import model_classes
    from pipeline.progress import progress_bar
    from pipeline.run_inputs import analysed_pixels, preprocessing, snapshots

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.evolution
    device = ctx.compute_on(spec, deterministic=True)
    manifest = ctx.read(MANIFEST)
    activations = ctx.read(ACTIVATIONS)
    layers = [EvolutionLayer(meta.label, meta.module, meta.channels, meta.width)
              for meta in store_layers(activations)]
    ids = searched_images(activations["pred"][:, 0] >= 0, spec.images)
    classes = model_classes(workflow, len(ctx.read(CLASSES)))
    compared = [(snapshot.label, functools.partial(load_snapshot, workflow.model,
                                                   workflow.source, snapshot, classes, device))
                for snapshot in snapshots(workflow, layout)]
    prep = preprocessing(workflow)
    pixels = analysed_pixels(workflow, layout, manifest)

    def decode(folder):
        bar = progress_bar("decode searched images", total=len(ids), unit="img")
        decoded = DecodedImages.build(folder, ids, pixels, prep.input_size, spec.num_workers,
                                      bar.update, len(prep.mean))
        bar.close()
        return decoded

    with zarr_writes_settled():
        searched = write_evolution(ctx.output(EVOLUTION), compared, layers, decode,
                                   prep.normalise(), ids, prep.input_size, spec.batch_size,
                                   device)
    print(f"[evolution] {len(compared)} snapshots, {searched} images searched, "
          f"{sum(layer.channels for layer in layers)} units on {device}")
