"""The activations store's two ends: the layers it is created for, and its finishing.

Between them shards fill its chunks (:mod:`pipeline.inference.shard`); exactly one process
finishes the store, once every chunk is done: it records the accuracy over the readable images
and lists the skipped ones, and only then drops the per-chunk progress records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.inference.store import InferenceSummary, LayerMeta

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class FinishedStore:
    """What the finished store says about the run: its summary, how many top classes each
    image keeps, and how many images were skipped as unreadable."""

    summary: InferenceSummary
    top: int
    n_skipped: int


def store_layer_metas(model: nn.Module, size: int, names: Sequence[str] | None
                      ) -> list[LayerMeta]:
    """The layers the store records: ``names`` (all analysable ones when None), for a
    ``size`` px square input."""
    from pipeline.interp import analysable_layers

    layers = analysable_layers(model, (size, size), names=list(names) if names else None)
    return [LayerMeta(layer.label, layer.name, layer.channels, layer.out_shape[1],
                      layer.out_shape[2], tuple(layer.receptive_field.size)) for layer in layers]


def finish_activations(staged: Path, ran_on: Sequence[str], device: str,
                       image_paths: np.ndarray, skipped_path: Path) -> FinishedStore:
    """Finish the filled store at ``staged``: record where it ran (``ran_on``; with none, as a
    run resumed after its last chunk computed nothing, what a killed finishing run recorded,
    else ``device``) and the accuracy over the readable images, write the table of skipped
    images (``image_paths``: the manifest's) to ``skipped_path``, drop the progress records."""
    import zarr

    from pipeline.inference.store import drop_progress, skipped_images

    store = zarr.open_group(staged, mode="r+")
    # The attribute is not there until the store is finished, so its absence is expected here.
    device = ", ".join(ran_on) or str(store.attrs.get("device", device))
    labels = np.asarray(store["label"][:])
    pred = np.asarray(store["pred"][:])
    readable = pred[:, 0] >= 0
    top1 = float((pred[readable, 0] == labels[readable]).mean()) if readable.any() else 0.0
    top5 = float((pred[readable] == labels[readable, None]).any(axis=1).mean()) \
        if readable.any() else 0.0
    summary = InferenceSummary(device, top1, top5, int(readable.sum()))
    store.attrs.update(summary.to_attrs())
    skipped = skipped_images(staged)
    ids = [image_id for image_id, _ in skipped]
    table = pd.DataFrame({"image_id": pd.Series(ids, dtype="int64"),
                          "path": image_paths[ids] if ids else [],
                          "reason": [reason for _, reason in skipped]})
    table.to_parquet(skipped_path, index=False)
    drop_progress(staged)
    return FinishedStore(summary, int(pred.shape[1]), len(skipped))
