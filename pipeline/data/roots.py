"""Where a workflow's images are: the one place that turns ``[data]`` into folders."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Workflow
from pipeline.layout import RunLayout


def analysed_root(workflow: Workflow, layout: RunLayout) -> Path:
    """The folder of the analysed (validation) images."""
    if workflow.data.source == "synthetic":
        return layout.synthetic_data / "val"
    return Path(workflow.data.root).expanduser()


def train_root(workflow: Workflow, layout: RunLayout) -> Path:
    """The folder of the training images (used only when ``[train] enabled``)."""
    if workflow.data.source == "synthetic":
        return layout.synthetic_data / "train"
    return Path(workflow.data.train_root).expanduser()
