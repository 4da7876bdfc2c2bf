"""Stage ``occlusion`` (Figure 7): a grey square slid over sample images."""

from __future__ import annotations

from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("occlusion", inputs=("prepare", "train", "activations"),
                keys=("data.source", "data.root", "model", "occlusion", "activations.layers"),
                outputs=lambda workflow, layout: (layout.occlusion,), loads_weights=True,
                reads_images=True,
                enabled=lambda workflow: workflow.occlusion.images > 0
                or bool(workflow.occlusion.files))
def occlusion(ctx: StageContext) -> None:
    """occlude sample images with a sliding grey square (Figure 7)"""
    raise NotImplementedError
