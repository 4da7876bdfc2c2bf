"""The typed context of the atlas templates.

The render stage gathers every number and image path first, then hands one frozen
:class:`AtlasContext` to :func:`pipeline.atlas.render.write_atlas` ("gather, then render").
Keeping the templates' input a plain, immutable value means the HTML can be re-rendered or
tested without torch, dask or any stored run.

All image paths are POSIX paths relative to the atlas root (the folder holding ``index.html``);
the renderer turns them into links that also work from the ``layers/`` pages.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class UnitEntry:
    """One channel of a layer, shown as a Figure 2 tile (or a placeholder if dead)."""

    unit: int  # channel index in the layer
    dead: bool  # max activation over the whole data set is zero
    peak: float  # max activation over the data set
    top_class: str | None  # most frequent true class among its top images
    n_images: int  # how many top images (<= k; fewer if it fired in fewer images)
    tile: str | None  # tile image relative to the atlas root (POSIX), None if dead


@dataclass(frozen=True)
class LayerEntry:
    """One analysed layer: its own page ``layers/<label>.html`` and one entry on the index."""

    label: str  # "conv1" — used in file names: layers/conv1.html
    module: str  # dotted module name, e.g. "features.relu1"
    out_shape: tuple[int, int, int]  # (channels, height, width) of the output
    receptive_field: int  # size in input pixels
    units: tuple[UnitEntry, ...]
    preview: str | None  # relative path of a preview image for the index

    @property
    def n_units(self) -> int:
        """Number of units listed (normally ``out_shape[0]``)."""
        return len(self.units)

    @property
    def n_dead(self) -> int:
        """Units that never fired on the data set; a high count hints at a poor init or lr."""
        return sum(1 for u in self.units if u.dead)


@dataclass(frozen=True)
class AtlasContext:
    """Everything the atlas shows; accuracies are fractions in [0, 1] (None: not measured)."""

    title: str
    workflow: str
    model_name: str
    dataset_name: str
    n_images: int
    n_classes: int
    top1: float | None
    top5: float | None
    val_accuracy: float | None  # trained accuracy, if any
    layers: tuple[LayerEntry, ...]
    filters_image: str | None  # first layer's filter weights grid, relative path
    generated: str  # ISO date string
    version: str  # package version
    method: str  # "deconvnet" etc.
    top_k: int
