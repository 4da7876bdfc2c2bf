"""The dask graph of the rank stage: one pass over every layer's ``max`` array.

Each dask block (several zarr chunks of images, all units) becomes a :class:`Partial`; partials
merge in a tree of fan-in ``FAN_IN``, so no task ever holds more than a few blocks' summaries and
memory is bounded by the block size, not by the number of images. All layers go into one
``dask.compute``, on the local threaded scheduler or on a dask.distributed client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from pipeline.ranking.partials import Partial, block_partial, merge

FAN_IN = 8
BLOCK_BYTES = 64 * 2**20  # target size of one dask block of a layer's max array


def block_rows(chunk_rows: int, channels: int, target_bytes: int = BLOCK_BYTES) -> int:
    """Rows per dask block: whole zarr chunks, about ``target_bytes`` of float32 in all."""
    chunks = max(1, target_bytes // max(1, chunk_rows * channels * 4))
    return chunks * chunk_rows


def layer_graph(store: Path, label: str, m: int, rows: int | None = None) -> Any:
    """A delayed :class:`Partial` of every image of layer ``label``, from ``rows``-image blocks."""
    import zarr

    array = zarr.open_array(str(store), path=f"{label}/max", mode="r")
    rows = rows or block_rows(array.chunks[0], array.shape[1])
    maxes = da.from_zarr(array, chunks=(rows, array.shape[1]))
    offsets = np.concatenate([[0], np.cumsum(maxes.chunks[0])[:-1]])
    level = [dask.delayed(block_partial)(block, int(offset), m)
             for block, offset in zip(maxes.to_delayed().ravel(), offsets, strict=True)]
    while len(level) > 1:
        level = [dask.delayed(merge)(level[i:i + FAN_IN], m) for i in range(0, len(level), FAN_IN)]
    return level[0]


def reduce_layers(store: Path, labels: list[str], m: int, scheduler: Any = None,
                  rows: int | None = None) -> dict[str, Partial]:
    """Every layer's merged :class:`Partial`, from one ``dask.compute``.

    ``scheduler`` is a ``distributed.Client`` (its workers must see ``store`` at the same path)
    or None for the local threaded scheduler.
    """
    graphs = {label: layer_graph(Path(store).absolute(), label, m, rows) for label in labels}
    (results,) = dask.compute(graphs, scheduler=scheduler or "threads")
    return results
