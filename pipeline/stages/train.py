"""Stage ``train``: trains the workflow's model, resumable from its newest epoch checkpoint.

How checkpoints and snapshots are kept, and resumed from: :mod:`pipeline.models.train_run`.
"""

from __future__ import annotations

from pipeline.atomic import write_json
from pipeline.catalog import (
    CLASSES,
    IMAGES,
    MANIFEST,
    METRICS,
    MODEL,
    MODEL_FILE,
    SKIPPED,
    SNAPSHOTS,
    SYNTHETIC_DATA,
    TRAIN_MANIFEST,
)
from pipeline.run_inputs import analysed_root, preprocessing, train_root
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("train",
                reads=(MANIFEST, TRAIN_MANIFEST, CLASSES, IMAGES, SYNTHETIC_DATA, MODEL_FILE),
                # the snapshots only when the workflow keeps them (the evolution stage's key
                # then follows their content)
                writes=(MODEL, METRICS, SNAPSHOTS),
                config=("data.source", "data.root", "data.train_root", "model", "train"),
                enabled=lambda workflow: workflow.train.enabled)
def train(ctx: StageContext) -> None:
    """train the model on the training images"""
    import torch

    from pipeline.models.loading import build_model
    from pipeline.models.train_run import TrainingImages, initialise_weights, train_run
    from pipeline.models.training import save_state

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.train
    device = ctx.compute_on(spec)
    classes = ctx.read(CLASSES)
    torch.manual_seed(spec.seed)
    model = build_model(workflow.model, num_classes=len(classes))
    initialise_weights(model, spec.init_std, spec.first_init_scale)
    model.to(device)
    prep = preprocessing(workflow)
    images = TrainingImages(
        train_root(workflow, layout), ctx.read(TRAIN_MANIFEST),
        prep.training_transform(workflow.model.resize_size) if spec.augment
        else prep.transform(),
        analysed_root(workflow, layout), ctx.read(MANIFEST), prep.transform())
    outcome = train_run(model, images, spec, layout.training_files, ctx.key, device)
    save_state(model.state_dict(), ctx.output(MODEL))
    write_json(ctx.output(METRICS), outcome.metrics)
    print(f"[train] val accuracy {outcome.metrics['val_accuracy']:.3f} after {spec.epochs} "
          "epochs")
    if outcome.left_out:
        print(f"[train] warning: {len(outcome.left_out)} unreadable images left out of training "
              f"and its accuracy, e.g. {outcome.left_out[0]} (the activations stage lists those "
              f"it analyses in {SKIPPED.path(layout).name})")
