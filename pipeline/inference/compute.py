"""Filling chunks of the activations store: the loop every device and every shard runs.

Batches never straddle a chunk, so a chunk's values do not depend on which chunks ran before it
(resumed, sharded or not, the arrays are bitwise the same on one machine). Reductions happen on
the device and stay there until a chunk is whole (one copy to the host per chunk, not
per batch); each finished chunk goes to a writer thread, so disk writes overlap compute, with at
most two chunks waiting so memory stays bounded by the chunk size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import ActivationsConfig
from pipeline.data.tolerant import TolerantImages
from pipeline.device import BF16_AUTOCAST
from pipeline.inference.recorder import SummaryRecorder
from pipeline.inference.store import mark_completed, write_chunk
from pipeline.inference.top_maps import TopMaps
from pipeline.models.pooling import shifted_max_pooling
from pipeline.progress import progress

MAX_PENDING_WRITES = 2


@dataclass
class ChunkPlan:
    """Which chunks to fill and how the store is laid out."""

    chunks: list[int]
    chunk_size: int
    n_images: int
    top: int
    layers: dict[str, str]  # module name -> label


def chunk_batches(plan: ChunkPlan, batch_size: int) -> list[list[int]]:
    """Batches of image indices that never straddle a chunk, so chunks are written whole."""
    batches: list[list[int]] = []
    for chunk in plan.chunks:
        start = chunk * plan.chunk_size
        end = min(start + plan.chunk_size, plan.n_images)
        batches.extend(list(range(i, min(i + batch_size, end)))
                       for i in range(start, end, batch_size))
    return batches


def fill_chunks(model: nn.Module, images: TolerantImages, store: zarr.Group, store_path: Path,
                plan: ChunkPlan, spec: ActivationsConfig,
                device: torch.device, still_current: Callable[[], bool] | None = None,
                keeper: tuple[TopMaps, Path] | None = None) -> None:
    """Compute and write every chunk in ``plan`` (each marked done after its arrays); with
    ``still_current``, stop before writing a chunk once it returns False. With ``keeper``
    (what keeps, and the folder it saves in), it also keeps the top maps of the passes, saved
    before the last chunk is marked done (:mod:`pipeline.inference.top_maps`): the process
    that finishes the store, perhaps another shard, finds every share's saved."""
    batches = chunk_batches(plan, spec.batch_size)
    gpu = device.type == "cuda"
    loader = DataLoader(images, batch_sampler=batches, num_workers=spec.num_workers,
                        pin_memory=gpu, prefetch_factor=spec.prefetch if spec.num_workers else None,
                        persistent_workers=False)
    if gpu and spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # bf16 where autocast takes it (CUDA, the CPU): rank re-checks the top in float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) \
        if spec.bf16 and device.type in BF16_AUTOCAST else nullcontext()
    buffer: dict[str, list[torch.Tensor]] = {}
    skipped: list[tuple[int, str]] = []
    pending: deque[Future] = deque()
    # max pooling by shifted maxima on a CPU: the same values, a third of the time
    # (pipeline.models.pooling); AlexNet's three poolings were a sixth of its forward pass
    with ThreadPoolExecutor(max_workers=1) as writer, \
            SummaryRecorder(model, list(plan.layers), keeper[0] if keeper else None) as recorder, \
            torch.inference_mode(), shifted_max_pooling(device):
        for batch, index, reasons in progress(loader, "activations", total=len(batches),
                                              unit="batch"):
            if keeper is not None:
                keeper[0].begin(index, reasons, device)
            x = batch.to(device, non_blocking=True)
            if gpu and spec.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model(x)
            prob, pred = logits.float().softmax(dim=1).topk(plan.top, dim=1)
            summaries = {"pred": pred.int(), "prob": prob}
            for name, label in plan.layers.items():
                summary = recorder.summaries[name]
                summaries.update({f"{label}/max": summary.max, f"{label}/argmax": summary.argmax,
                                  f"{label}/mean": summary.mean})
            if any(reasons):  # rare: only then build a mask (a host-to-device copy waits)
                bad = torch.tensor([bool(r) for r in reasons], device=device)[:, None]
                summaries = {key: value.masked_fill(bad, -1 if key.endswith(("pred", "argmax"))
                                                    else float("nan"))
                             for key, value in summaries.items()}
                skipped.extend((int(i), r) for i, r in zip(index, reasons, strict=True) if r)
            for key, value in summaries.items():  # stays on the device until the chunk is whole
                buffer.setdefault(key, []).append(value)
            last = int(index[-1])
            chunk = last // plan.chunk_size
            if last + 1 == min((chunk + 1) * plan.chunk_size, plan.n_images):
                start = chunk * plan.chunk_size
                arrays = {key: torch.cat(parts).cpu().numpy() for key, parts in buffer.items()}
                while len(pending) >= MAX_PENDING_WRITES:
                    pending.popleft().result()
                if keeper is not None and chunk == plan.chunks[-1]:  # before its marker
                    if still_current is None or still_current():
                        keeper[0].save(keeper[1] / f"{plan.chunks[0]:06d}", still_current)
                pending.append(writer.submit(_write, store, store_path, chunk, start, arrays,
                                             skipped, still_current))
                buffer, skipped = {}, []
        for future in pending:
            future.result()


class StoreReplaced(RuntimeError):
    """The staged store was recreated for another stage key while this task still ran."""


def _write(store: zarr.Group, store_path: Path, chunk: int, start: int,
           arrays: dict[str, np.ndarray], skipped: list[tuple[int, str]],
           still_current: Callable[[], bool] | None) -> None:
    if still_current is not None and not still_current():
        raise StoreReplaced(f"{store_path} now belongs to another run of the stage; this "
                            "task's results are dropped")
    write_chunk(store, start, arrays)
    mark_completed(store_path, chunk, skipped)
