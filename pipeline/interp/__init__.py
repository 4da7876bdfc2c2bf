"""Projection engine: deconvnet / guided / gradient back-projection, receptive fields, tiles."""

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
