"""One share of the activations stage's chunks, filled in this process or in a dask worker.

Everything the share needs is named by a picklable :class:`ShareSource` (the model's source,
the images and their manifest, ``[activations]``) and read from disk where it runs, so the same
function serves ``run activations``, ``--shard I/N`` processes and shard tasks on a dask
cluster; the store's own layer list says which modules to record.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
import zarr
from torch import nn

from pipeline.atomic import read_json, zarr_writes_settled
from pipeline.config import ActivationsConfig
from pipeline.data.images import ImageDataset
from pipeline.data.tolerant import TolerantImages
from pipeline.device import BF16_AUTOCAST, compute_on
from pipeline.inference.compute import ChunkPlan, fill_chunks
from pipeline.inference.store import completed_chunks, store_layers
from pipeline.inference.top_maps import TopMaps, kept_layers
from pipeline.labelled import array_in, group_in
from pipeline.models.loading import ModelSource
from pipeline.models.preprocessing import Preprocessing


@dataclass(frozen=True)
class ShareSource:
    """What a share reads, by absolute path where it travels to a dask worker: the model,
    the analysed images' folder and manifest, their preprocessing and ``[activations]``; and
    how many top maps per unit it keeps for the deconv stage, in which folder."""

    model: ModelSource
    images_root: Path
    manifest: Path
    preprocessing: Preprocessing
    spec: ActivationsConfig
    keep_maps: int = 0  # top maps kept per unit for the deconv stage (pipeline.inference.top_maps)
    top_maps: Path | None = None  # the staged folder they are saved in

    def images(self) -> ImageDataset:
        """The manifest's images, preprocessed exactly as the model sees them."""
        manifest = pd.read_parquet(self.manifest)
        return ImageDataset(self.images_root, manifest["path"].tolist(),
                            manifest["label"].tolist(), self.preprocessing.transform())


@dataclass(frozen=True)
class ShareReport:
    """What one share computed, where, and how fast."""

    images: int
    seconds: float
    device: str
    host: str

    def describe(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        return (f"{self.images} images in {self.seconds:.1f} s ({rate:.1f} images/s on "
                f"{self.device}, {self.host})")


def fill_share(source: ShareSource, store_path: Path, chunks: list[int],
               model: nn.Module | None = None, stage_key: str | None = None) -> ShareReport:
    """Compute and write ``chunks`` of the created store at ``store_path`` (each marked done).

    Chunks already marked done are skipped, so a task that dask reruns (its worker died)
    redoes only what is missing. With ``stage_key``, each chunk is written only while the staged
    store still belongs to that stage key: a task left running by a client that was stopped
    never writes into a store that a rerun with another configuration has created since.
    """
    spec = source.spec
    if spec.num_workers and multiprocessing.current_process().daemon:
        print(f"[activations] this dask worker runs as a daemon process, which cannot start "
              f"DataLoader workers: decoding in the task instead of {spec.num_workers} workers "
              "(start workers with --no-nanny for parallel decoding)", file=sys.stderr)
        spec = dataclasses.replace(spec, num_workers=0)
    device, _ = compute_on(spec.device, tf32=spec.tf32, bf16=spec.bf16)  # also on a worker
    store = zarr.open_group(store_path, mode="r+")
    attrs: Mapping[str, Any] = store.attrs  # JSON values, as the store's creation wrote them
    n_images, chunk_size = int(attrs["n_images"]), int(attrs["chunk_size"])
    done = completed_chunks(store_path)
    chunks = [chunk for chunk in chunks if chunk not in done]
    clock = time.perf_counter()
    if chunks:
        if model is None:
            model = source.model.load(device)
        prep = source.preprocessing
        size, channels = prep.input_size, len(prep.mean)
        layers = {cast(str, group_in(store, label).attrs["module"]): label
                  for label in attrs["layers"]}
        plan = ChunkPlan(chunks, chunk_size, n_images, int(array_in(store, "pred").shape[1]),
                         layers)
        images = TolerantImages(source.images(), (channels, size, size))
        marker = store_path.parent / f"{store_path.name}.key"
        with zarr_writes_settled():  # also on a dask worker, which lives on after the task
            fill_chunks(model, images, store, store_path, plan, spec, device,
                        still_current=None if stage_key is None
                        else lambda: read_json(marker) == stage_key,
                        keeper=_keeper(store, source, device))
    computed = sum(min(chunk_size, n_images - chunk * chunk_size) for chunk in chunks)
    return ShareReport(computed, time.perf_counter() - clock, str(device), socket.gethostname())


def _keeper(store: zarr.Group, source: ShareSource, device: torch.device
            ) -> tuple[TopMaps, Path] | None:
    """What keeps the top maps of the store's layers, and where it saves them, where the
    passes run in float32 (under bf16 autocast or TF32 its maps are not the deconv stage's);
    None: none kept."""
    spec, k = source.spec, source.keep_maps
    if k < 1 or source.top_maps is None or (spec.bf16 and device.type in BF16_AUTOCAST) or \
            (spec.tf32 and device.type == "cuda"):
        return None
    metas = store_layers(store)
    chosen = set(kept_layers({m.label: (m.channels, m.height, m.width) for m in metas}, k))
    if not chosen:
        return None
    return TopMaps({m.module: m.label for m in metas if m.label in chosen}, k), source.top_maps
