"""The paper's layer 1: the first convolution's filters, shown once per unit and as a grid.

A first-layer unit's projection is its filter times a positive number (the activation), so
nine projections of it say no more than the filter itself; the atlas shows the filter once
beside the unit's patches, and all filters as the paper's Figure 6 grid. That holds only where
nothing but rectifiers lies between the convolution and the analysed module:
:func:`shows_filters` decides it from the model's modules. The filters are drawn in the input's
channels (:mod:`pipeline.atlas.channels`): grey for a greyscale model, colour for RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

FILTERS_IMAGE = "filters.png"  # the Figure 6 grid, relative to the atlas root


@dataclass(frozen=True)
class FirstLayer:
    """The first convolution's filters, for the layer whose projections they are."""

    module: str  # its dotted name
    filters: np.ndarray  # uint8 [C, kh, kw, K], K input channels, each filter normalised on its
    # own (normalise_filters); shown_rgb draws them
    scales: np.ndarray  # [C] each filter's largest |weight|
    grid: str | None  # the Figure 6 image, relative to the atlas root
    grid_size: tuple[int, int]  # its (width, height)
    cells: tuple[tuple[int, int, int, int], ...]  # each filter's (x, y, w, h) in it


def first_layer(model: nn.Module, out_dir: Path, writer: Any) -> FirstLayer | None:
    """The first convolution's filters (if it reads the image: 1, 3 or 4 channels, not in
    groups); writes their Figure 6 grid with ``writer`` (an
    :class:`pipeline.atlas.gather.ImageWriter`)."""
    from pipeline.atlas.tiles import filter_grid, filter_grid_cells, normalise_filters
    from pipeline.models.evaluation import first_conv

    found = first_conv(model)
    if found is None or found[1].in_channels not in (1, 3, 4) or found[1].groups != 1:
        return None
    name, conv = found
    weights = conv.weight.detach().cpu().numpy()
    scale = max(1, 32 // max(weights.shape[-2:]))
    grid = filter_grid(weights, scale=scale)
    writer.save(grid, out_dir / FILTERS_IMAGE)
    _, cells = filter_grid_cells(len(weights), (weights.shape[2] * scale,
                                                weights.shape[3] * scale))
    return FirstLayer(module=name, filters=normalise_filters(weights),
                      scales=np.abs(weights).reshape(len(weights), -1).max(axis=1),
                      grid=FILTERS_IMAGE, grid_size=grid.size, cells=tuple(cells))


def shows_filters(model: nn.Module, module: str, first: FirstLayer) -> bool:
    """Whether an analysed module is the first convolution or its rectified output, so that
    each unit's projection is its filter times a positive number: between the two (in the
    model's order) only rectifiers and pass-through modules. A BatchNorm in between may flip
    a filter's sign, and a pooling mixes positions: those layers show projections."""
    from torch import nn

    if module == first.module:
        return True
    modules = dict(model.named_modules())
    names = list(modules)
    if first.module not in modules or module not in modules:
        return False
    path = names[names.index(first.module) + 1:names.index(module) + 1]
    leaves = [name for name in path if not any(other.startswith(name + ".") for other in path)]
    return bool(leaves) and all(isinstance(modules[name], (nn.ReLU, nn.Identity, nn.Dropout))
                                for name in leaves)
