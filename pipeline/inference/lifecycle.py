"""The activations store's life: the layers it is created for, its filling, its finishing.

Shares of its chunks are filled here, in ``--shard`` processes, or as tasks on a dask cluster
(:mod:`pipeline.inference.shard`); exactly one process finishes the store, once every chunk is
done: it records the accuracy over the readable images and lists the skipped ones, and only
then drops the per-chunk progress records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.atomic import write_json
from pipeline.config import Workflow
from pipeline.inference.store import InferenceSummary, LayerMeta, completed_chunks, creation_lock
from pipeline.layout import RunLayout

if TYPE_CHECKING:
    from torch import nn

    from pipeline.inference.shard import ShareReport


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


def fill_shares(workflow: Workflow, layout: RunLayout, staged: Path, chunks: list[int],
               model: nn.Module, client=None, stage_key: str | None = None) -> list[ShareReport]:
    """Fill ``chunks`` of the created store at ``staged``: on the dask ``client``'s workers
    (which load the model on their own devices, each chunk written only while the store still
    belongs to ``stage_key``), else in this process with ``model``."""
    from pipeline.inference.shard import fill_share

    if client is None:
        return [fill_share(workflow, layout, staged, chunks, model)]
    if not chunks:
        return []
    from pipeline.cluster import run_shards

    return run_shards(client, workflow.dask, fill_share,
                      (workflow.with_absolute_paths(), layout, staged.absolute()), chunks,
                      "activations", model=None, stage_key=stage_key)


def claim_finishing(final: Path, staged: Path, n_chunks: int,
                    shard: tuple[int, int] | None) -> int | None:
    """None when this process is the one to finish the store (it then says so on disk), else
    the number of chunks still left to the other shards: exactly one shard finishes."""
    with creation_lock(final):
        remaining = n_chunks - len(completed_chunks(staged))
        finishing = staged / "finishing.json"
        if remaining or (shard and finishing.exists()):
            return remaining
        write_json(finishing, {"by": shard})
    return None


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
