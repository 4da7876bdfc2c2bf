"""The model under analysis and its images, read the same way by every stage that needs them.

Here, below the stages, so that the activations shards (``pipeline.inference.shard``), which a
dask worker imports when it unpickles a task, load them without importing the stage registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from pipeline.config import Workflow
from pipeline.data.roots import analysed_root
from pipeline.layout import RunLayout

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipeline.data.images import ImageDataset


def analysed_model(workflow: Workflow, layout: RunLayout, device: torch.device) -> nn.Module:
    """The workflow's model with its weights, sized to the prepared classes, in eval mode."""
    from pipeline.models.loading import load_model

    return load_model(workflow, layout, len(pd.read_parquet(layout.classes)), device)


def analysed_described(workflow: Workflow, layout: RunLayout, device: torch.device
                       ) -> tuple[nn.Module, str]:
    """(:func:`analysed_model`, which weights it has, as the model card says it)."""
    from pipeline.models.loading import load_described

    return load_described(workflow, layout, len(pd.read_parquet(layout.classes)), device)


def analysed_images(workflow: Workflow, layout: RunLayout, manifest: pd.DataFrame) -> ImageDataset:
    """The manifest's images, preprocessed exactly as the model sees them."""
    from pipeline.data.images import ImageDataset
    from pipeline.models.preprocessing import preprocessing

    return ImageDataset(analysed_root(workflow, layout), manifest["path"].tolist(),
                        manifest["label"].tolist(), preprocessing(workflow).transform())


def analysed_pixels(workflow: Workflow, layout: RunLayout, manifest: pd.DataFrame) -> ImageDataset:
    """The manifest's images as the network's ``uint8`` crops, before scaling (see
    :meth:`pipeline.models.preprocessing.Preprocessing.pixels`)."""
    from pipeline.data.images import ImageDataset
    from pipeline.models.preprocessing import preprocessing

    return ImageDataset(analysed_root(workflow, layout), manifest["path"].tolist(),
                        manifest["label"].tolist(), preprocessing(workflow).pixels())
