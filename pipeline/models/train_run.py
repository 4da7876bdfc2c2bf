"""One workflow's training run: loaders, resumption, checkpoints and snapshots on disk.

Only the newest checkpoint is kept (ZFNet's, with SGD's momentum, is ~0.5 GB: one per epoch of
a 70-epoch run would be 35 GB): the next one is written whole under its own name before the
older one goes. ``[train] snapshot_epochs`` keeps the weights of those epochs in
``snapshots/`` for the evolution stage. At the end of an epoch the checkpoint is written first,
then that epoch's snapshot, then the older checkpoint is removed; so every checkpoint has the
snapshots of the epochs before it, and its own epoch's snapshot, if a kill came before it, is
its weights: a resumed run writes it again from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.atomic import remove
from pipeline.config import TrainConfig
from pipeline.errors import UserError

if TYPE_CHECKING:
    import torch

# What a checkpoint's metrics carry for resuming, left out of metrics.json.
RESUME_STATES = ("optimizer_state", "schedule_state")


@dataclass(frozen=True, eq=False)
class TrainingImages:
    """The training and validation images: each a data folder, its manifest (``path``,
    ``label``) and the transform the model sees them through."""

    train_root: Path
    train_manifest: pd.DataFrame
    train_transform: Callable
    val_root: Path
    val_manifest: pd.DataFrame
    val_transform: Callable


@dataclass(frozen=True)
class TrainingFiles:
    """Where a training run keeps its newest checkpoint and its snapshots."""

    checkpoints: Path
    snapshots: Path

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:03d}.pt"

    def snapshot(self, epoch: int) -> Path:
        return self.snapshots / f"epoch_{epoch:03d}.pt"


@dataclass(frozen=True)
class TrainingOutcome:
    """The run's metrics (as metrics.json holds them) and the unreadable images left out."""

    metrics: dict
    left_out: list[str]


def initialise_weights(model: torch.nn.Module, init_std: float, first_init_scale: float) -> None:
    """The fresh model's weights before training (on the CPU, so a GPU run starts from the same
    weights); a resumed run loads its checkpoint's over them."""
    from pipeline.models.training import init_weights, scale_first_conv

    if init_std > 0:
        init_weights(model, init_std)
    scale_first_conv(model, first_init_scale)


def train_run(model: torch.nn.Module, images: TrainingImages, spec: TrainConfig,
              files: TrainingFiles, key: str, device: torch.device) -> TrainingOutcome:
    """Train ``model`` (already on ``device``) as ``spec`` says, resuming from the newest
    checkpoint written under the stage key ``key``, keeping ``files``'s checkpoints and
    snapshots up to date at each epoch's end."""
    from torch.utils.data import DataLoader, Dataset

    from pipeline.data.images import (
        ImageDataset,
        LeftOutCounted,
        MemoryCached,
        ReadableImages,
        collate_readable,
    )
    from pipeline.data.sampling import EpochShuffle
    from pipeline.models.training import save_state, train_classifier

    train_set: Dataset = ReadableImages(ImageDataset(
        images.train_root, images.train_manifest["path"].tolist(),
        images.train_manifest["label"].tolist(), images.train_transform))
    val_set: Dataset = ReadableImages(ImageDataset(
        images.val_root, images.val_manifest["path"].tolist(),
        images.val_manifest["label"].tolist(), images.val_transform))
    if not spec.num_workers:  # decoded once, held for the next epochs when they fit (1 GiB
        # each; see MemoryCached)
        val_set = MemoryCached(val_set)
        if not spec.augment:
            train_set = MemoryCached(train_set)
    resumed = _resume(model, files, key, spec.snapshot_epochs)
    start_epoch = int(resumed["epoch"]) if resumed else 0
    if start_epoch:
        print(f"[train] resuming after epoch {start_epoch} from {files.checkpoint(start_epoch)}")
    _keep_snapshots(model, spec, files, start_epoch)
    # Loader workers draw their random crops and flips from torch's generator seeded by the
    # loader's base seed, which comes from this process's generator, reseeded each epoch by
    # train_classifier, and batch i always goes to worker i mod n: with the same number of
    # workers, a resumed epoch draws what it drew before.
    sampler = EpochShuffle(len(images.train_manifest), seed=spec.seed, first_epoch=start_epoch)
    workers: dict[str, Any] = {"num_workers": spec.num_workers, "persistent_workers": False,
               "pin_memory": device.type == "cuda",  # pinned batches travel without a wait
               **({"prefetch_factor": 2} if spec.num_workers else {})}
    train_loader = LeftOutCounted(DataLoader(train_set, batch_size=spec.batch_size,
                                             sampler=sampler, collate_fn=collate_readable,
                                             **workers))
    val_loader = LeftOutCounted(DataLoader(val_set, batch_size=max(spec.batch_size, 128),
                                           collate_fn=collate_readable, **workers))

    def end_of_epoch(epoch: int, metrics: dict) -> None:
        # The epoch's metrics and schedule travel with it: a run resumed after the last epoch
        # reports them, and the plateau schedule continues where it was.
        save_state({"key": key, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": metrics["optimizer_state"],
                    "schedule": metrics["schedule_state"],
                    "metrics": _summary(metrics)}, files.checkpoint(epoch))
        if epoch in spec.snapshot_epochs:
            save_state(model.state_dict(), files.snapshot(epoch))
        _remove_other_checkpoints(files, epoch)

    metrics = train_classifier(
        model, train_loader, val_loader, epochs=spec.epochs, lr=spec.lr,
        weight_decay=spec.weight_decay, device=device, optimizer=spec.optimizer,
        momentum=spec.momentum, filter_radius=spec.filter_radius, schedule=spec.schedule,
        plateau_patience=spec.plateau_patience, start_epoch=start_epoch,
        optimizer_state=resumed["optimizer"] if resumed else None,
        schedule_state=resumed.get("schedule") if resumed else None,
        resumed_metrics=resumed.get("metrics") if resumed else None, on_epoch_end=end_of_epoch)
    _check_snapshots(spec, files)
    return TrainingOutcome(_summary(metrics),
                           sorted(train_loader.unreadable | val_loader.unreadable))


def _summary(metrics: dict) -> dict:
    """The metrics without the states kept only for resuming."""
    return {key: value for key, value in metrics.items() if key not in RESUME_STATES}


def _resume(model: torch.nn.Module, files: TrainingFiles, key: str,
            snapshot_epochs: tuple[int, ...]) -> dict | None:
    """Load the newest usable checkpoint written under the same stage key into ``model``.

    Returns the checkpoint (``epoch``, ``optimizer``, ``schedule`` and that epoch's
    ``metrics``), or None to start afresh. Checkpoints of other keys go, and so does one that
    lacks a snapshot of an earlier epoch (removed by hand): the snapshots could not be made
    again. Checkpoints are written under a temporary name and renamed when whole, so a write
    cut off by a full disk or a kill never carries a checkpoint's name.
    """
    import torch

    if not files.checkpoints.is_dir():
        return None
    for path in sorted(files.checkpoints.glob("epoch_*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a checkpoint cut off by a kill is not worth keeping
            remove(path)
            continue
        if state.get("key") != key:
            remove(path)
            continue
        epoch = int(state["epoch"])
        missing = [e for e in snapshot_epochs if e < epoch and not files.snapshot(e).is_file()]
        if missing:
            print(f"[train] {files.snapshot(missing[0])} is missing: not resuming from "
                  f"{path.name}")
            remove(path)
            continue
        model.load_state_dict(state["model"])
        _remove_other_checkpoints(files, epoch)
        return state
    return None


def _keep_snapshots(model: torch.nn.Module, spec: TrainConfig, files: TrainingFiles,
                    start_epoch: int) -> None:
    """Leave in ``snapshots/`` exactly the snapshots of the epochs done: none on a fresh start
    (an earlier run's are stale), those up to ``start_epoch`` on a resume, the resumed epoch's
    written again from the checkpoint's weights if a kill came before it was."""
    from pipeline.models.training import save_state

    kept = {files.snapshot(epoch) for epoch in spec.snapshot_epochs if epoch <= start_epoch}
    if not kept:
        remove(files.snapshots)
        return
    for path in files.snapshots.iterdir() if files.snapshots.is_dir() else ():
        if path not in kept:  # later epochs, and files cut off by a kill
            remove(path)
    if start_epoch in spec.snapshot_epochs and not files.snapshot(start_epoch).is_file():
        save_state(model.state_dict(), files.snapshot(start_epoch))


def _remove_other_checkpoints(files: TrainingFiles, epoch: int) -> None:
    """Keep only epoch ``epoch``'s checkpoint (and nothing a kill cut off beside it)."""
    keep = files.checkpoint(epoch)
    for path in files.checkpoints.iterdir():
        if path != keep:
            remove(path)


def _check_snapshots(spec: TrainConfig, files: TrainingFiles) -> None:
    """Every snapshot asked for is there (each was written when its epoch ended)."""
    missing = [path for path in map(files.snapshot, spec.snapshot_epochs)
               if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: training snapshot missing after the last epoch (removed "
                        "while the stage ran?); run the train stage again, it trains afresh")
