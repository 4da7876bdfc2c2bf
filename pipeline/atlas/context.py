"""The typed context of the atlas templates.

The render stage gathers every number and image path first, then hands one frozen
:class:`AtlasContext` to :func:`pipeline.atlas.render.write_atlas` ("gather, then render").
Keeping the templates' input a plain, immutable value means the HTML can be re-rendered or
tested without torch, dask or any stored run.

All image paths are POSIX paths relative to the atlas root (the folder holding ``index.html``);
the renderer turns them into links that work from every page's depth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SheetCell:
    """A rectangle of a sheet image, shown alone by CSS (one file serves many cells)."""

    image: str  # sheet path relative to the atlas root
    x: int
    y: int
    w: int
    h: int
    sheet_w: int
    sheet_h: int

    @property
    def style(self) -> str:
        """CSS placing the sheet inside a container of the rectangle's shape (percentages, so
        the cell scales with the page)."""
        return (f"width:{100 * self.sheet_w / self.w:.4g}%;left:{-100 * self.x / self.w:.4g}%;"
                f"top:{-100 * self.y / self.h:.4g}%").replace("-0%", "0%")

    @property
    def crisp(self) -> bool:
        """Enlarged pixel by pixel (stored as PNG): keep the pixels square when scaled."""
        return self.image.endswith(".png")


Fractions = tuple[float, float, float, float]  # (top, left, bottom, right) / image side


@dataclass(frozen=True)
class ProjectionCell:
    """One projection as the atlas draws it: the same rectangle of two lossless sheets, one
    per display curve (:data:`pipeline.interp.display.CURVES`), and the value its own scale
    shows at full contrast, from which a page draws it on the layer's common scale."""

    linear: SheetCell
    lifted: SheetCell
    scale: float  # the projection's own display scale (99th percentile of |p|), binned as shown

    def cell(self, curve: str) -> SheetCell:
        return self.linear if curve == "linear" else self.lifted

    @property
    def image(self) -> str:  # the linear sheet, so code listing linked files finds one of them
        return self.linear.image


@dataclass(frozen=True)
class PageLink:
    """A link to a page beyond Figure 2 (occlusion, evolution, invariance), with a caption."""

    title: str
    path: str  # relative to the atlas root (POSIX)
    note: str = ""  # one line under the title
    image: str | None = None  # a picture for the link, relative to the atlas root


@dataclass(frozen=True)
class SnapshotCell:
    """One column of a unit's evolution strip (Figure 4): its strongest activation over the
    analysed images at one training snapshot, projected."""

    label: str  # "epoch 5", or a checkpoint's file name
    value: float  # that activation (0: the unit did not fire at this snapshot)
    projection: ProjectionCell | None  # None when it did not fire


@dataclass(frozen=True)
class TopImage:
    """One of a unit's top images, as its unit page shows it."""

    rank: int  # 0-based
    value: float  # the unit's maximum in this image
    file: str  # image path relative to the data root (never absolute)
    true_class: str
    pred_class: str | None  # the model's top-1 prediction (None: unknown)
    projection: ProjectionCell | None  # with the first method (None: no method's)
    patch: SheetCell
    thumb: SheetCell | None  # the whole image, small
    box: Fractions | None  # receptive field as fractions of the image side, clipped to [0, 1]
    projections: tuple[ProjectionCell, ...] = ()  # one per method of AtlasContext.methods
    heat: SheetCell | None = None  # the unit's activation map in this image (RGBA)
    heat_box: Fractions | None = None  # where the map lies over the image (may exceed [0, 1])


@dataclass(frozen=True)
class OptimisedImage:
    """An input optimised to drive a unit (the featurevis stage), for one objective: ``mean``
    (the unit's mean over its whole map, on an input of the network's size) or ``centre``
    (the map cell centred on an input the size of its receptive field)."""

    objective: str
    driven: bool  # False: the optimisation could not raise the unit; its image is noise
    picture: SheetCell | None  # None when not driven: never drawn
    side: int  # input pixels the picture spans (a binned picture has fewer pixels)
    peak: float  # the unit's largest activation on the image
    data_peak: float  # ... and on the data set, what ``peak`` is read against
    value: float  # the objective on the image
    start: float  # the objective on the random image the optimisation started from

    @property
    def reach(self) -> float | None:
        """``peak`` as a multiple of ``data_peak`` (None: the unit never fires on the data)."""
        return self.peak / self.data_peak if self.data_peak > 0 else None


@dataclass(frozen=True)
class OptimisationRecipe:
    """How the featurevis stage optimised its images: Adam ``steps`` of size ``lr``."""

    steps: int
    lr: float


@dataclass(frozen=True)
class UnitEntry:
    """One channel of a layer: a Figure 2 tile on the layer page, and a page of its own."""

    unit: int  # channel index in the layer
    dead: bool  # max activation over the whole data set is zero
    peak: float  # max activation over the data set
    top_class: str | None  # most frequent true class among its top-100 images
    n_images: int  # how many top images (<= k; fewer if it fired in fewer images)
    tile: str | None  # tile image relative to the atlas root (POSIX), None if dead
    top_class_share: float = 0.0  # share of that class among the top-100 images
    class_entropy: float = 0.0  # bits
    frac_active: float = 0.0  # share of images where the unit fires
    mean_max: float = 0.0
    std_max: float = 0.0
    quantiles: tuple[tuple[str, float], ...] = ()  # ("q99", value), ...
    n_selectivity: int = 0  # images behind the class distribution
    classes: tuple[tuple[int, str, int], ...] = ()  # (label, name, count), most frequent first
    histogram: tuple[tuple[float, float, int], ...] = ()  # (low, high, count) of positive maxima
    n_zero: int = 0  # images where the unit's maximum is zero (not in ``histogram``)
    top_images: tuple[TopImage, ...] = ()
    named_class: str | None = None  # top_class if it clearly dominates (gather.dominant_class)
    filter_scale: float | None = None  # layer 1: the filter's largest |weight|
    filter: SheetCell | None = None  # layer 1: the filter in its tile
    evolution: tuple[SnapshotCell, ...] = ()  # Figure 4 strip, one cell per snapshot
    links: tuple[PageLink, ...] = ()  # other pages that show this unit (occlusion)
    weak: bool = False  # barely fires: see pipeline.atlas.weak (never True for a dead unit)
    grid: tuple[ProjectionCell, ...] = ()  # the tile's projections (first method), rank order
    patches: tuple[SheetCell, ...] = ()  # the tile's patches, rank order (the grid file's cells)
    randomised: tuple[ProjectionCell | None, ...] = ()  # per method: its top image projected
    # through the network with every weight randomised (the sanity stage), None: not computed
    # the inputs optimised to drive it (the featurevis stage), one per objective in the store's
    # order; () when that stage did not optimise this unit or did not run
    optimised: tuple[OptimisedImage, ...] = ()

    def optimised_for(self, objective: str) -> OptimisedImage | None:
        """Its optimised input for ``objective`` ("mean" or "centre"), if there is one."""
        return next((image for image in self.optimised if image.objective == objective), None)

    @property
    def shown_class(self) -> str:
        """What a card says about the unit's classes: the dominant class, or "mixed"."""
        return self.named_class if self.named_class is not None else "mixed"


@dataclass(frozen=True)
class SanityRow:
    """One method's sanity figures on one layer (pipeline.sanity): how similar its projections
    stay under randomised weights, how much they depend on the image, and what that means."""

    method: str
    spearman: float  # rank correlation of |projection|, trained against fully randomised
    ssim: float
    between_projections: float  # mean correlation of a unit's top projections with each other
    with_patches: float  # ... with the local contrast of their own patches
    n: int  # projections compared
    reading: str  # one sentence
    empty: int = 0  # randomised projections that came out all zero (left out of the means)
    cascade: tuple[tuple[str, float, float], ...] = ()  # (randomised down to, Spearman, SSIM)


@dataclass(frozen=True)
class LayerEntry:
    """One analysed layer: its own page ``layers/<label>.html`` and one entry on the index."""

    label: str  # "conv1" — used in file names: layers/conv1.html
    module: str  # dotted module name, e.g. "features.relu1"
    out_shape: tuple[int, int, int]  # (channels, height, width) of the output
    receptive_field: int  # size in input pixels
    units: tuple[UnitEntry, ...]
    preview: str | None  # relative path of a preview image for the index
    first_layer: bool = False  # its projections are its filters (shown once, as in the paper)
    patch_is_image: bool = False  # the receptive field covers the whole input: no patch shown
    filter_grid: str | None = None  # layer 1: every filter in one image (Figure 6)
    filter_cells: tuple[SheetCell, ...] = ()  # layer 1: each unit's filter in that image
    evolution_page: str | None = None  # the layer's page of evolution strips, if any
    common_scales: tuple[float, ...] = ()  # per method: its cells' common scale (common_scale)
    binning: int = 1  # each shown pixel is the mean of binning x binning projection pixels
    tile_factor: int = 1  # whole factor by which the layer's cells are enlarged in tiles
    page_factor: int = 1  # ... and on unit pages
    sanity: tuple[SanityRow, ...] = ()  # per method: the sanity stage's figures, if it ran
    # the patches grid tiles/<label>/<unit:04d>-patches.jpg: its first cell (rank 1) is
    # (0, 0, cell_w, cell_h) of a sheet_w x sheet_h file; (0, 0, 0, 0): unknown (search
    # results then show no thumbnail)
    patch_cell: tuple[int, int, int, int] = (0, 0, 0, 0)  # (cell_w, cell_h, sheet_w, sheet_h)
    optimised_factor: int = 1  # whole factor by which a unit page enlarges its ``mean`` input

    @property
    def n_units(self) -> int:
        """Number of units listed (normally ``out_shape[0]``)."""
        return len(self.units)

    def most_selective(self, n: int) -> tuple[UnitEntry, ...]:
        """The ``n`` live units whose top images are most of one class (then the strongest):
        the index's strip of this layer."""
        from pipeline.ranking.picks import selectivity_order

        live = [u for u in self.units if u.tile and not u.dead]
        most = max((u.n_images for u in live), default=0)
        return tuple(sorted(live, key=lambda u: selectivity_order(
            u.n_images, most, u.named_class is not None, u.top_class_share, u.peak,
            u.unit))[:n])

    @property
    def n_optimised(self) -> int:
        """Units with inputs optimised by the featurevis stage (0: it did not run)."""
        return sum(1 for u in self.units if u.optimised)

    @property
    def n_dead(self) -> int:
        """Units that never fired on the data set; a high count hints at a poor init or lr."""
        return sum(1 for u in self.units if u.dead)

    @property
    def median_peak(self) -> float:
        """The median peak of the live units: what "weak" is measured against."""
        from pipeline.atlas.weak import median_live_peak

        return median_live_peak([u.peak for u in self.units], [u.dead for u in self.units])

    @property
    def n_weak(self) -> int:
        """Units that barely fire (pipeline.atlas.weak): shown, but marked."""
        return sum(1 for u in self.units if u.weak)

    @property
    def filter_peak(self) -> float:
        """Layer 1: the common scale of its filters' largest |weight|s (as for projections:
        pipeline.interp.display.common_scale); 0 otherwise."""
        from pipeline.interp.display import common_scale

        return common_scale([u.filter_scale for u in self.units if u.filter_scale is not None])

    def filter_contrast(self, unit: UnitEntry) -> float | None:
        """Layer 1: the contrast at which a unit's filter is drawn on the layer's common scale
        (as a linear projection); None for other layers."""
        from pipeline.interp.display import common_ratio

        if unit.filter_scale is None:
            return None
        return common_ratio(unit.filter_scale, self.filter_peak, "linear")

    def contrast(self, cell: ProjectionCell, method: int, curve: str) -> float:
        """The contrast at which the page draws ``cell`` (of the ``method``-th method) on the
        layer's common scale (:func:`pipeline.interp.display.common_ratio`)."""
        from pipeline.interp.display import common_ratio

        if method >= len(self.common_scales):
            return 1.0
        return common_ratio(cell.scale, self.common_scales[method], curve)


@dataclass(frozen=True)
class SkippedImage:
    file: str  # relative to the data root
    reason: str


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
    method: str  # the first projection method: what tiles and layer pages show
    top_k: int
    parameters: int | None = None  # trainable and frozen parameters of the model
    input_size: int | None = None  # side of the network input, px
    input_channels: int = 3  # of the network input: 1 (grey), 3 (RGB) or 4
    n_readable: int | None = None
    skipped: tuple[SkippedImage, ...] = ()  # the first few unreadable images
    n_skipped: int = 0
    data_warnings: tuple[str, ...] = ()  # what prepare found wrong with the data (no abs. paths)
    workflow_file: str = ""  # file name only: no local folders in a shared atlas
    devices: tuple[tuple[str, str], ...] = ()  # (stage, device)
    stage_seconds: tuple[tuple[str, float], ...] = ()
    class_groups: dict[str, tuple[int, ...]] = field(default_factory=dict)  # for search
    class_names: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()  # every stored projection method (unit pages switch)
    strip_units: int = 6  # most selective units per layer shown on the index
    warnings_shown: int = 10  # data warnings listed on the index (all are in data_warnings.json)
    experiments: tuple[PageLink, ...] = ()  # the pages beyond Figure 2, linked from the index
    figures: tuple[int, ...] = (2,)  # the paper's figures the atlas reproduces (the footer)
    weights: str = ""  # which weights: published ones, or a file, its entry and prefix
    # the header's experiment links (pipeline.atlas.navigation), set before any page is written
    experiment_nav: tuple[PageLink, ...] = ()
    optimisation: OptimisationRecipe | None = None  # the featurevis stage's, when it ran

    @property
    def device_groups(self) -> tuple[tuple[str, str], ...]:
        """(what was computed with, the stages that did), each setting once, in stage order:
        the run card's lines (most runs have one or two)."""
        groups: dict[str, list[str]] = {}
        for stage, device in self.devices:
            groups.setdefault(device, []).append(stage)
        return tuple((device, ", ".join(stages)) for device, stages in groups.items())

    @property
    def all_methods(self) -> tuple[str, ...]:
        return self.methods or (self.method,)

    @property
    def channels_note(self) -> str:
        """How the pictures draw the input's channels ("" for RGB)."""
        from pipeline.atlas.channels import channels_note

        return channels_note(self.input_channels)


@dataclass(frozen=True)
class PageExtras:
    """What one experiment's pages (occlusion, evolution, invariance) add to the rest of the
    atlas: a card on the index, and links or strips on the layer and unit pages."""

    link: PageLink
    unit_links: dict[tuple[str, int], tuple[PageLink, ...]] = field(default_factory=dict)
    unit_evolution: dict[tuple[str, int], tuple[SnapshotCell, ...]] = field(default_factory=dict)
    layer_pages: dict[str, str] = field(default_factory=dict)  # layer label -> page path


def with_extras(context: AtlasContext, extras: list[PageExtras]) -> AtlasContext:
    """``context`` with the experiments' index cards, unit links and strips added."""
    if not extras:
        return context
    layers = []
    for layer in context.layers:
        units = []
        for unit in layer.units:
            where = (layer.label, unit.unit)
            links = tuple(link for extra in extras for link in extra.unit_links.get(where, ()))
            strip = next((extra.unit_evolution[where] for extra in extras
                          if where in extra.unit_evolution), ())
            units.append(dataclasses.replace(unit, links=unit.links + links,
                                             evolution=strip or unit.evolution))
        page = next((extra.layer_pages[layer.label] for extra in extras
                     if layer.label in extra.layer_pages), layer.evolution_page)
        layers.append(dataclasses.replace(layer, units=tuple(units), evolution_page=page))
    return dataclasses.replace(context, layers=tuple(layers),
                               experiments=context.experiments + tuple(e.link for e in extras))
