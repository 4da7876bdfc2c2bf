"""The activations stage's run of its store: who finishes it, and finishing it.

The stage creates the store (:func:`pipeline.inference.store.create_store`, its layers from
:func:`pipeline.interp.layers.store_layer_metas`) and fills shares of its chunks with
:func:`pipeline.inference.shard.fill_share`: in this process, in ``--shard`` processes, or as
tasks on a dask cluster. Exactly one process finishes the store, once every chunk is done: it
records the accuracy over the readable images and lists the skipped ones, and only
then drops the per-chunk progress records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import write_json
from pipeline.inference.store import InferenceSummary, completed_chunks, creation_lock
from pipeline.schemas import Skipped


@dataclass(frozen=True)
class FinishedStore:
    """What the finished store says about the run: its summary, how many top classes each
    image keeps, and how many images were skipped as unreadable."""

    summary: InferenceSummary
    top: int
    n_skipped: int


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
                       image_paths: np.ndarray, skipped_path: Callable[[], Path],
                       bf16: bool = False, top_maps: Path | None = None) -> FinishedStore:
    """Finish the filled store at ``staged``: record where it ran (``ran_on``; with none, as a
    run resumed after its last chunk computed nothing, what a killed finishing run recorded,
    else ``device``), the accuracy over the readable images and whether the passes ran in
    bfloat16 (``bf16``), write the table of skipped
    images (``image_paths``: the manifest's) to ``skipped_path()``, drop the progress records.
    The path is asked for when the table is written (a stage's ``ctx.output`` then names it as
    the file being written, and the store until then). The shares' ``top_maps`` are merged
    into one (:func:`pipeline.inference.top_maps.merge_shares`)."""
    import zarr

    from pipeline.inference.store import drop_progress, skipped_images
    from pipeline.labelled import array_in

    store = zarr.open_group(staged, mode="r+")
    # The attribute is not there until the store is finished, so its absence is expected here.
    device = ", ".join(ran_on) or str(store.attrs.get("device", device))
    labels = np.asarray(array_in(store, "label")[:])
    pred = np.asarray(array_in(store, "pred")[:])
    readable = pred[:, 0] >= 0
    top1 = float((pred[readable, 0] == labels[readable]).mean()) if readable.any() else 0.0
    top5 = float((pred[readable] == labels[readable, None]).any(axis=1).mean()) \
        if readable.any() else 0.0
    summary = InferenceSummary(device, top1, top5, int(readable.sum()), bf16)
    store.attrs.update(summary.to_attrs())
    skipped = skipped_images(staged)
    ids = [image_id for image_id, _ in skipped]
    table = pd.DataFrame({"image_id": pd.Series(ids, dtype="int64"),
                          "path": image_paths[ids] if ids else [],
                          "reason": [reason for _, reason in skipped]})
    Skipped.write(table, skipped_path())
    if top_maps is not None:
        from pipeline.inference.top_maps import merge_shares

        merge_shares(top_maps)
    drop_progress(staged)
    return FinishedStore(summary, int(pred.shape[1]), len(skipped))
