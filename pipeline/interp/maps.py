"""Where a unit fires: its whole activation map in an image, next to the one value projected.

The deconvnet shows what one activation (the unit's maximum) responds to; the map shows every
place in the image where the unit responds, so a reader sees whether the maximum is one spot
or one of many. Geometry: map cell (y, x) is centred on its receptive field, so the map covers
the input from ``first + size/2 - jump/2`` in steps of ``jump`` (see :func:`map_extent`).
"""

from __future__ import annotations

from torch import Tensor, nn

from pipeline.interp.receptive_field import ReceptiveField
from pipeline.models.evaluation import evaluating
from pipeline.models.pooling import shifted_max_pooling


def feature_maps(model: nn.Module, images: Tensor, module: str) -> Tensor:
    """The output ``[B, C, H, W]`` of the module named ``module`` for ``images`` (its last call
    per forward pass, the one the activations stage records). The model runs in eval mode without
    gradients; its modes are restored and the hook removed afterwards, also after an error."""
    captured: list[Tensor] = []
    handle = model.get_submodule(module).register_forward_hook(
        lambda _module, _args, output: captured.append(output.detach()))
    try:
        with evaluating(model), shifted_max_pooling(images.device):
            model(images)
    finally:
        handle.remove()
    return captured[-1]


def map_extent(field: ReceptiveField, map_hw: tuple[int, int]) -> tuple[float, ...]:
    """(top, left, bottom, right) in input pixels of the area an ``map_hw`` map covers when
    each cell is drawn centred on its receptive field, one ``jump`` wide."""
    top = field.first[0] + field.size[0] / 2 - field.jump[0] / 2
    left = field.first[1] + field.size[1] / 2 - field.jump[1] / 2
    return (top, left, top + field.jump[0] * map_hw[0], left + field.jump[1] * map_hw[1])
