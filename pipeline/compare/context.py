"""The typed context of the comparison site: everything its pages show of two runs.

A plain frozen value, as the atlas's :class:`~pipeline.atlas.context.AtlasContext`: the pages can
be rendered and tested without torch or a stored run. Image paths are POSIX paths relative to
the site's root; each run's pictures live in its own folder (``a/``, ``b/``), never in the runs'
atlases, so the site stays whole when it is copied alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.atlas.context import UnitEntry


@dataclass(frozen=True)
class RunFacts:
    """What a reader needs to tell the two runs apart: model, weights, data, accuracy. Names
    only, never a local folder (the site is shared)."""

    name: str  # the run folder's name
    workflow_file: str  # file name only
    model_name: str
    parameters: int
    input_size: int | None
    weights: str  # "trained here, seed 1, 2 epochs", a checkpoint's file name, torchvision's
    dataset_name: str
    n_images: int
    n_readable: int | None
    n_classes: int
    top1: float | None  # fractions in [0, 1]; None: not measured
    top5: float | None
    val_accuracy: float | None
    method: str  # the projection method the tiles show
    top_k: int


@dataclass(frozen=True)
class FilterGrid:
    """The first convolution's filters as the paper's Figure 6 (a, b) grid."""

    image: str  # relative to the site root
    module: str
    n_filters: int
    kernel: tuple[int, int]  # (height, width)
    scale_min: float  # the filters' largest |weight|: how unequal their norms are
    scale_median: float
    scale_max: float
    layer: str | None = None  # the analysed layer whose units are these filters, if any
    n_dead: int | None = None  # its dead units


@dataclass(frozen=True)
class LayerStats:
    """One analysed layer's numbers. Selectivity and activations are over its live units."""

    label: str
    module: str
    n_units: int
    n_dead: int
    selectivity: float | None  # mean share of the top class among the top images (None: all dead)
    peak_mean: float | None  # per-unit largest activation over the data set
    peak_median: float | None
    activation_mean: float | None  # per-unit mean activation (over positions and images)
    activation_median: float | None
    active_mean: float | None  # per-unit share of images where it fires

    @property
    def dead_share(self) -> float:
        return self.n_dead / self.n_units if self.n_units else 0.0


@dataclass(frozen=True)
class ShownLayer:
    """A layer whose most selective units are shown as Figure 2 tiles (Figure 6 c, d)."""

    label: str
    module: str
    receptive_field: int  # px
    n_units: int
    n_dead: int
    n_live: int
    units: tuple[UnitEntry, ...]  # most selective first; ``tile`` relative to the site root


@dataclass(frozen=True)
class RunSide:
    """One of the two runs: "A" (the first ``-w``) or "B"."""

    side: str
    facts: RunFacts
    filters: FilterGrid | None  # None: the first convolution does not read the image
    layers: tuple[LayerStats, ...]  # in the run's order
    second: ShownLayer | None  # the second analysed layer (None: fewer than two)

    @property
    def title(self) -> str:
        return f"{self.side} · {self.facts.name}"

    def layer(self, label: str) -> LayerStats | None:
        return next((layer for layer in self.layers if layer.label == label), None)


@dataclass(frozen=True)
class LayerRow:
    """One layer label of either run: both columns, or one of them (only in A / only in B)."""

    label: str
    a: LayerStats | None
    b: LayerStats | None


@dataclass(frozen=True)
class Comparison:
    """Everything the comparison site shows."""

    title: str
    a: RunSide
    b: RunSide
    generated: str  # ISO date
    version: str  # package version

    @property
    def sides(self) -> tuple[RunSide, RunSide]:
        return (self.a, self.b)

    @property
    def rows(self) -> tuple[LayerRow, ...]:
        """Layers by label: A's order, then the labels only B has."""
        labels = [layer.label for layer in self.a.layers]
        labels += [layer.label for layer in self.b.layers if layer.label not in labels]
        return tuple(LayerRow(label, self.a.layer(label), self.b.layer(label))
                     for label in labels)
