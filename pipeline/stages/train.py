"""Stage ``train``: trains the workflow's model, resumable from its newest epoch checkpoint.

How checkpoints and snapshots are kept, and resumed from: :mod:`pipeline.models.run_training`.
"""

from __future__ import annotations

import pandas as pd

from pipeline.atomic import write_json
from pipeline.data.roots import analysed_root, train_root
from pipeline.stages.context import StageContext
from pipeline.stages.registry import Output, register_stage


@register_stage("train", inputs=("prepare",),
                keys=("data.source", "data.root", "data.train_root", "model", "train"),
                reads_images=True,
                # the snapshots only when the workflow keeps them (the evolution stage's key
                # then follows their content)
                outputs=("model", "metrics", Output("snapshots", when="train.snapshot_epochs")),
                enabled=lambda workflow: workflow.train.enabled)
def train(ctx: StageContext) -> None:
    """train the model on the training images"""
    import torch

    from pipeline.device import resolve_device
    from pipeline.models.loading import build_model
    from pipeline.models.preprocessing import preprocessing
    from pipeline.models.run_training import TrainingImages, initialise_weights, train_run
    from pipeline.models.training import save_state

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.train
    device = resolve_device(spec.device)
    classes = pd.read_parquet(layout.classes)
    torch.manual_seed(spec.seed)
    model = build_model(workflow, num_classes=len(classes))
    initialise_weights(model, spec.init_std, spec.first_init_scale)
    model.to(device)
    prep = preprocessing(workflow)
    images = TrainingImages(
        train_root(workflow, layout), pd.read_parquet(layout.train_manifest),
        prep.training_transform(workflow.model.resize_size) if spec.augment
        else prep.transform(),
        analysed_root(workflow, layout), pd.read_parquet(layout.manifest), prep.transform())
    outcome = train_run(model, images, spec, layout, ctx.key, device)
    save_state(model.state_dict(), ctx.output(layout.model))
    write_json(ctx.output(layout.metrics), outcome.metrics)
    print(f"[train] val accuracy {outcome.metrics['val_accuracy']:.3f} after {spec.epochs} "
          "epochs")
    if outcome.left_out:
        print(f"[train] warning: {len(outcome.left_out)} unreadable images left out of training "
              f"and its accuracy, e.g. {outcome.left_out[0]} (the activations stage lists those "
              f"it analyses in {layout.skipped.name})")
