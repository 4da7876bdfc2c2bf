"""Stage ``evolution`` (Figure 4): each unit's strongest activation at each training snapshot."""

from __future__ import annotations

from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("evolution", inputs=("prepare", "train", "activations"),
                keys=("data.source", "data.root", "model", "evolution", "train.snapshot_epochs",
                      "activations.layers"),
                outputs=lambda workflow, layout: (layout.evolution,), reads_images=True,
                reads_checkpoints=True,
                enabled=lambda workflow: bool(workflow.evolution.checkpoints)
                or (workflow.train.enabled and bool(workflow.train.snapshot_epochs)))
def evolution(ctx: StageContext) -> None:
    """project each unit's strongest activation at each training snapshot (Figure 4)"""
    raise NotImplementedError
