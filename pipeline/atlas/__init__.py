"""The static HTML atlas: Figure 2 tiles per unit, one page per layer, an index.

The render stage gathers an :class:`AtlasContext` and writes the tile PNGs with
:mod:`pipeline.atlas.tiles`, then calls :func:`write_atlas`.
"""

from pipeline.atlas.context import AtlasContext, LayerEntry, UnitEntry
from pipeline.atlas.render import write_atlas
from pipeline.atlas.tiles import compose_unit_tile, filter_grid, save_image, tile_scale

__all__ = [
    "AtlasContext",
    "LayerEntry",
    "UnitEntry",
    "compose_unit_tile",
    "filter_grid",
    "save_image",
    "tile_scale",
    "write_atlas",
]
