"""Stage ``train``: trains the workflow's model, resumable from its per-epoch checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from pipeline.atomic import remove, write_json
from pipeline.data.roots import analysed_root, train_root
from pipeline.layout import RunLayout
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage

if TYPE_CHECKING:
    import torch


@register_stage("train", inputs=("prepare",),
                keys=("data.source", "data.root", "data.train_root", "model", "train"),
                reads_images=True,
                outputs=lambda workflow, layout: (layout.model, layout.metrics),
                enabled=lambda workflow: workflow.train.enabled)
def train(ctx: StageContext) -> None:
    """train the model on the training images"""
    import torch
    from torch.utils.data import DataLoader

    from pipeline.data.images import ImageDataset, ReadableImages, collate_readable
    from pipeline.data.sampling import EpochShuffle
    from pipeline.device import resolve_device
    from pipeline.models.loading import build_model
    from pipeline.models.preprocessing import preprocessing
    from pipeline.models.training import save_state, scale_first_conv, train_classifier

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.train
    device = resolve_device(spec.device)
    classes = pd.read_parquet(layout.classes)
    torch.manual_seed(spec.seed)
    model = build_model(workflow, num_classes=len(classes)).to(device)
    scale_first_conv(model, spec.first_init_scale)  # a resumed run loads its weights over it
    transform = preprocessing(workflow).transform()
    train_manifest = pd.read_parquet(layout.train_manifest)
    val_manifest = pd.read_parquet(layout.manifest)
    train_set = ReadableImages(ImageDataset(
        train_root(workflow, layout), train_manifest["path"].tolist(),
        train_manifest["label"].tolist(), transform))
    val_set = ReadableImages(ImageDataset(
        analysed_root(workflow, layout), val_manifest["path"].tolist(),
        val_manifest["label"].tolist(), transform))
    start_epoch, optimizer_state, resumed_metrics = _resume(model, layout, ctx.key)
    if start_epoch:
        print(f"[train] resuming after epoch {start_epoch} from {layout.checkpoint(start_epoch)}")
    sampler = EpochShuffle(len(train_set), seed=spec.seed, first_epoch=start_epoch)
    train_loader = DataLoader(train_set, batch_size=spec.batch_size, sampler=sampler,
                              collate_fn=collate_readable)
    val_loader = DataLoader(val_set, batch_size=max(spec.batch_size, 128),
                            collate_fn=collate_readable)

    def save_checkpoint(epoch: int, metrics: dict) -> None:
        # The epoch's metrics travel with it: a run resumed after the last epoch reports them.
        save_state({"key": ctx.key, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": metrics["optimizer_state"],
                    "metrics": _without_optimizer(metrics)}, layout.checkpoint(epoch))

    metrics = train_classifier(model, train_loader, val_loader, epochs=spec.epochs, lr=spec.lr,
                               weight_decay=spec.weight_decay, device=device,
                               optimizer=spec.optimizer, momentum=spec.momentum,
                               filter_radius=spec.filter_radius, start_epoch=start_epoch,
                               optimizer_state=optimizer_state,
                               resumed_metrics=resumed_metrics, on_epoch_end=save_checkpoint)
    save_state(model.state_dict(), ctx.output(layout.model))
    summary = _without_optimizer(metrics)
    write_json(ctx.output(layout.metrics), summary)
    print(f"[train] val accuracy {summary['val_accuracy']:.3f} after {spec.epochs} epochs")
    left_out = sorted(train_set.unreadable | val_set.unreadable)
    if left_out:
        print(f"[train] warning: {len(left_out)} unreadable images left out of training and "
              f"its accuracy, e.g. {left_out[0]} (the activations stage lists those it analyses "
              f"in {layout.skipped.name})")


def _without_optimizer(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "optimizer_state"}


def _resume(model: torch.nn.Module, layout: RunLayout, key: str
            ) -> tuple[int, dict | None, dict | None]:
    """Load the newest checkpoint written under the same stage key; drop any from other keys.

    Returns (epochs done, the optimiser's state, that epoch's metrics). Checkpoints are written
    under a temporary name and renamed when whole, so a write cut off by a full disk or a kill
    never carries a checkpoint's name.
    """
    import torch

    if not layout.checkpoints.is_dir():
        return 0, None, None
    for path in sorted(layout.checkpoints.glob("epoch_*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a checkpoint cut off by a kill is not worth keeping
            remove(path)
            continue
        if state.get("key") != key:
            remove(path)
            continue
        model.load_state_dict(state["model"])
        return int(state["epoch"]), state["optimizer"], state.get("metrics")
    return 0, None, None
