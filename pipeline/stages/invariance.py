"""Stage ``invariance`` (Figure 5): feature distances under translation, scaling and rotation."""

from __future__ import annotations

from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("invariance", inputs=("prepare", "train", "activations"),
                keys=("data.source", "data.root", "model", "invariance"),
                outputs=lambda workflow, layout: (layout.invariance,), loads_weights=True,
                reads_images=True,
                enabled=lambda workflow: workflow.invariance.images > 0
                or bool(workflow.invariance.files))
def invariance(ctx: StageContext) -> None:
    """measure feature and class invariance to translation, scale and rotation (Figure 5)"""
    raise NotImplementedError
