"""Some images' unit summaries measured in float32, whatever the activations stage ran in.

Rank asks for these when the store was recorded in bfloat16 (:mod:`pipeline.ranking.recheck`):
the same forward pass and hooks as the stage (:class:`SummaryRecorder`), without autocast.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from pipeline.data.tolerant import TolerantImages
from pipeline.inference.recorder import SummaryRecorder
from pipeline.models.evaluation import evaluating
from pipeline.models.pooling import shifted_max_pooling


def float32_summaries(model: nn.Module, images: TolerantImages, layers: dict[str, str],
                      ids: np.ndarray, batch_size: int, num_workers: int,
                      device: torch.device) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per label of ``layers`` (module name -> label): the float32 maxima ``[n, C]`` of images
    ``ids`` (NaN where an image cannot be read) and where they are, ``int64 [n, C]``."""
    found: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        label: ([], []) for label in layers.values()}
    if not len(ids):
        return {label: (np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64))
                for label in layers.values()}
    loader = DataLoader(Subset(images, [int(i) for i in ids]), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    with SummaryRecorder(model, list(layers)) as recorder, torch.inference_mode(), \
            evaluating(model), shifted_max_pooling(device):
        for batch, _, reasons in loader:
            model(batch.to(device, non_blocking=True).float())
            bad = np.array([bool(reason) for reason in reasons])[:, None]
            for name, label in layers.items():
                summary = recorder.summaries[name]
                peak = summary.max.float().cpu().numpy()
                found[label][0].append(np.where(bad, np.float32(np.nan), peak))
                found[label][1].append(summary.argmax.cpu().numpy().astype(np.int64))
    return {label: (np.concatenate(maxima), np.concatenate(where))
            for label, (maxima, where) in found.items()}
