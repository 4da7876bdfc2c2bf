"""What a workflow's stages read, resolved: the image folders, the model, the preprocessing.

The one place where the workflow and the run's paths become the plain objects the library
takes (folders, a :class:`~pipeline.models.loading.ModelSource`, a
:class:`~pipeline.models.preprocessing.Preprocessing`, datasets): the library itself never sees
a ``Workflow`` or a ``RunLayout``. Stages, the preflight, the stamps, the notebook API and
``compare`` resolve them the same way here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.layout import RunLayout

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from pipeline.compare.gather import RunInputs
    from pipeline.data.images import ImageDataset
    from pipeline.data.prepare_run import ScanSettings
    from pipeline.experiments.snapshots import Snapshot
    from pipeline.models.loading import ModelSource
    from pipeline.models.preprocessing import Preprocessing


def analysed_root(workflow: Any, layout: RunLayout) -> Path:
    """The folder of the analysed (validation) images."""
    if workflow.data.source == "synthetic":
        return layout.synthetic_data / "val"
    return Path(workflow.data.root).expanduser()


def train_root(workflow: Any, layout: RunLayout) -> Path:
    """The folder of the training images (used only when ``[train] enabled``)."""
    if workflow.data.source == "synthetic":
        return layout.synthetic_data / "train"
    return Path(workflow.data.train_root).expanduser()


def scan_settings(workflow: Any) -> ScanSettings:
    """How the prepare stage (and the preflight) scan the workflow's images."""
    from pipeline.data.prepare_run import ScanSettings
    from pipeline.models.pretrained import named_weights

    published = named_weights(workflow.model, workflow.source)
    devkit = workflow.data.devkit
    return ScanSettings(workflow.data.source, Path(devkit).expanduser() if devkit else None,
                        workflow.train.enabled,
                        published.categories() if published is not None else None,
                        workflow.source)


def model_source(workflow: Any, layout: RunLayout, num_classes: int) -> ModelSource:
    """Where the analysed model comes from: published weights, ``[model] checkpoint`` or the
    run's own ``model.pt``, sized to ``num_classes``."""
    from pipeline.models.loading import ModelSource

    return ModelSource(workflow.model, layout.model if workflow.train.enabled else None,
                       num_classes, workflow.source)


def preprocessing(workflow: Any) -> Preprocessing:
    """The preprocessing of the workflow's model (its published weights', or ``[model]``'s)."""
    from pipeline.models.preprocessing import preprocessing as model_preprocessing

    return model_preprocessing(workflow.model, workflow.source)


def analysed_model(workflow: Any, layout: RunLayout, classes: pd.DataFrame,
                   device: torch.device) -> nn.Module:
    """The workflow's model with its weights, sized to ``classes``, in eval mode."""
    return model_source(workflow, layout, len(classes)).load(device)


def analysed_images(workflow: Any, layout: RunLayout, manifest: pd.DataFrame) -> ImageDataset:
    """The manifest's images, preprocessed exactly as the model sees them."""
    from pipeline.data.images import ImageDataset

    return ImageDataset(analysed_root(workflow, layout), manifest["path"].tolist(),
                        manifest["label"].tolist(), preprocessing(workflow).transform())


def analysed_pixels(workflow: Any, layout: RunLayout, manifest: pd.DataFrame) -> ImageDataset:
    """The manifest's images as the network's ``uint8`` crops, before scaling (see
    :meth:`pipeline.models.preprocessing.Preprocessing.pixels`)."""
    from pipeline.data.images import ImageDataset

    return ImageDataset(analysed_root(workflow, layout), manifest["path"].tolist(),
                        manifest["label"].tolist(), preprocessing(workflow).pixels())


def snapshots(workflow: Any, layout: RunLayout) -> list[Snapshot]:
    """The weights the evolution stage compares, in order."""
    from pipeline.experiments.snapshots import snapshot_files

    return snapshot_files(workflow.evolution.checkpoints,
                          {epoch: layout.snapshot(epoch)
                           for epoch in workflow.train.snapshot_epochs})


def compare_inputs(workflow: Any, layout: RunLayout) -> RunInputs:
    """A finished run as ``compare`` reads it."""
    from pipeline import catalog
    from pipeline.atlas.render_run import dataset_name
    from pipeline.compare.gather import RunInputs, weights_origin

    classes = catalog.CLASSES.read(catalog.CLASSES.path(layout))
    return RunInputs(
        name=workflow.name, workflow_file=Path(workflow.source).name,
        model_name=workflow.model.label, weights=weights_origin(workflow.model, workflow.train),
        dataset_name=dataset_name(workflow.data.source, workflow.data.root),
        activations=catalog.ACTIVATIONS.path(layout),
        projections=catalog.PROJECTIONS.path(layout), classes=catalog.CLASSES.path(layout),
        units=catalog.UNITS.path(layout), topk=catalog.TOPK.path(layout),
        metrics=catalog.METRICS.path(layout),
        model=model_source(workflow, layout, len(classes)))
