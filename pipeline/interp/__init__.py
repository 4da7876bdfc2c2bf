"""Projection engine: deconvnet / guided / gradient back-projection, receptive fields, tiles.

The names below are imported on first use (:mod:`pipeline.lazy`): the atlas's workers import
this package's numpy-only modules and need neither torch nor torchvision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_names

if TYPE_CHECKING:
    from pipeline.interp.display import to_display
    from pipeline.interp.layers import LayerInfo, analysable_layers
    from pipeline.interp.projector import Projector
    from pipeline.interp.receptive_field import (
        ReceptiveField,
        clip_box,
        field_tile,
        receptive_fields,
    )

__all__ = [
    "LayerInfo",
    "Projector",
    "ReceptiveField",
    "analysable_layers",
    "clip_box",
    "field_tile",
    "receptive_fields",
    "to_display",
]

__getattr__ = lazy_names(__name__, {
    "to_display": "display", "LayerInfo": "layers", "analysable_layers": "layers",
    "Projector": "projector", "ReceptiveField": "receptive_field", "clip_box": "receptive_field",
    "field_tile": "receptive_field", "receptive_fields": "receptive_field"})
