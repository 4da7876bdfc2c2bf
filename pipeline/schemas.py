"""The shapes of the run's tables and stores: every column and array, spelled once.

A column is a ``str`` (so ``frame[TOPK.unit]`` reads like ``frame["unit"]``) that also carries
its dtype and a line of doc; a table schema is a class of such columns in file order. Writers
build their frames from these names, readers check them (:meth:`TableSchema.read`), and the
architecture page (``docs/architecture.md``) lists them, so a column renamed in one place is
renamed everywhere, and a typo is an attribute error a type checker sees, not a KeyError at run
time. Store schemas list each store's arrays with their dimension names; the metadata record
each store keeps in its attributes is a dataclass of the package that writes it
(``pipeline.catalog`` pairs them).

This module is at the bottom of the package (it imports nothing of it but ``errors``), so that
the library packages that write and read the tables can all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pipeline.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


class Column(str):
    """A column's name, with its dtype (as pandas spells it) and what it holds."""

    dtype: str
    doc: str

    def __new__(cls, name: str, dtype: str, doc: str = "") -> Column:
        column = super().__new__(cls, name)
        column.dtype, column.doc = dtype, doc
        return column

    def __reduce__(self) -> tuple:
        return Column, (str(self), self.dtype, self.doc)


class TableSchema:
    """A parquet table's columns, in file order (the class attributes that are columns)."""

    title: ClassVar[str] = ""

    @classmethod
    def columns(cls) -> tuple[Column, ...]:
        found: dict[str, Column] = {}
        for klass in reversed(cls.__mro__):
            found.update({name: value for name, value in vars(klass).items()
                          if isinstance(value, Column)})
        return tuple(found.values())

    @classmethod
    def names(cls) -> list[str]:
        return [str(column) for column in cls.columns()]

    @classmethod
    def check(cls, frame: pd.DataFrame, path: Path | str) -> pd.DataFrame:
        """``frame`` as read from ``path``, refused in one line when a column is missing."""
        missing = [name for name in cls.names() if name not in frame.columns]
        if missing:
            raise UserError(f"{path}: not a {cls.title or cls.__name__} table (no column "
                            f"{', '.join(repr(name) for name in missing)}); delete it and run "
                            "the stage that writes it again")
        return frame

    @classmethod
    def read(cls, path: Path, columns: list[str] | None = None) -> pd.DataFrame:
        """The table at ``path`` (only ``columns`` when given), its columns checked."""
        import pandas as pd

        frame = pd.read_parquet(path, columns=columns)
        if columns is None:
            cls.check(frame, path)
        return frame

    @classmethod
    def conform(cls, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``, refused (ValueError) unless its columns are this table's, in order: a
        writer that drifted from the schema fails where it writes, not in a reader later."""
        if list(frame.columns) != cls.names():
            raise ValueError(f"{cls.title or cls.__name__} table with columns "
                             f"{list(frame.columns)}, expected {cls.names()}")
        return frame

    @classmethod
    def write(cls, frame: pd.DataFrame, path: Path) -> None:
        """Write ``frame`` as this table (parquet, no index), its columns checked first."""
        cls.conform(frame).to_parquet(path, index=False)


# -- prepare -----------------------------------------------------------------------------------

class Manifest(TableSchema):
    """The analysed images, in the order every store indexes them (``image_id``)."""

    title = "manifest"
    image_id = Column("image_id", "int64", "the image's index in every store")
    path = Column("path", "str", "the file, relative to the data folder")
    class_index = Column("label", "int64", "the image's true class: an index into classes")


class Classes(TableSchema):
    """The model's classes, in its output order."""

    title = "classes"
    class_index = Column("label", "int64", "the model's output index")
    name = Column("name", "str", "the class's readable name")
    wnid = Column("wnid", "str", "the ImageNet WordNet id, or the folder's name")


class Skipped(TableSchema):
    """Images the activations stage could not read, and why."""

    title = "skipped"
    image_id = Column("image_id", "int64")
    path = Column("path", "str")
    reason = Column("reason", "str")


# -- rank --------------------------------------------------------------------------------------

class UnitKey(TableSchema):
    """The two columns every per-unit table starts with."""

    layer = Column("layer", "str", "the layer's label (conv5)")
    unit = Column("unit", "int32", "the channel in that layer")


class Topk(UnitKey):
    """One row per (unit, rank) with a positive activation: the top images and where."""

    title = "topk"
    rank = Column("rank", "int32", "0 for the strongest")
    image_id = Column("image_id", "int64")
    value = Column("value", "float32", "the unit's maximum over the image's feature map")
    y = Column("y", "int32", "the maximum's row in the feature map")
    x = Column("x", "int32", "the maximum's column in the feature map")


class Units(UnitKey):
    """Per-unit statistics of the per-image maxima, and class selectivity."""

    title = "units"
    peak = Column("peak", "float32", "the largest activation over the data set")
    mean_max = Column("mean_max", "float32", "the mean of the per-image maxima")
    std_max = Column("std_max", "float32")
    frac_active = Column("frac_active", "float32", "the share of images it fires on")
    q50 = Column("q50", "float32", "quantiles of the per-image maxima")
    q90 = Column("q90", "float32")
    q99 = Column("q99", "float32")
    q999 = Column("q999", "float32")
    dead = Column("dead", "bool", "it never fires")
    n_top = Column("n_top", "int32", "its rows in topk")
    top_class = Column("top_class", "int32", "the most frequent true class of its top images")
    top_class_share = Column("top_class_share", "float32")
    class_entropy = Column("class_entropy", "float32", "bits; NaN for a dead unit")
    n_selectivity = Column("n_selectivity", "int32", "the top images counted")


class Selectivity(UnitKey):
    """The true-class histogram of each unit's top images."""

    title = "selectivity"
    class_index = Column("class", "int32", "a true class (index into classes)")
    count = Column("count", "int32")


class Histograms(UnitKey):
    """The non-empty bins of each unit's histogram of per-image maxima."""

    title = "histograms"
    low = Column("low", "float32")
    high = Column("high", "float32")
    count = Column("count", "int64")


# -- experiments -------------------------------------------------------------------------------

class Invariance(TableSchema):
    """Figure 5: one row per image and transformed copy."""

    title = "invariance"
    image_id = Column("image_id", "int64")
    class_index = Column("label", "int64", "the image's true class")
    transform = Column("transform", "str", "translation, scale or rotation")
    amount = Column("amount", "float64", "pixels, factor or degrees")
    distance_layer1 = Column("distance_layer1", "float64", "feature distance at layer 1")
    distance_last = Column("distance_last", "float64", "feature distance at the last layer")
    prob_true = Column("prob_true", "float64", "the true class's probability")
    predicted = Column("predicted", "int64", "the most probable class")
    predicted_prob = Column("predicted_prob", "float64")
    norm_layer1 = Column("norm_layer1", "float64", "the untransformed features' norm")
    norm_last = Column("norm_last", "float64")


class Sanity(TableSchema):
    """Sanity checks: per layer, method and cascade step, trained against randomised."""

    title = "sanity"
    layer = Column("layer", "str")
    method = Column("method", "str")
    step = Column("step", "int64", "the cascade step: 1 = the top module randomised")
    randomised_from = Column("randomised_from", "str", "the lowest module randomised")
    randomised_label = Column("randomised_label", "str", "its layer's label, if analysed")
    full = Column("full", "bool", "every weight randomised")
    spearman_mean = Column("spearman_mean", "float64", "rank correlation of |projection|")
    spearman_std = Column("spearman_std", "float64")
    ssim_mean = Column("ssim_mean", "float64")
    ssim_std = Column("ssim_std", "float64")
    n = Column("n", "int64", "projections compared")
    empty_projections = Column("empty", "int64", "projections that were all zero")


class InputDependence(TableSchema):
    """Sanity checks: per layer and method, how much the projections follow their images."""

    title = "input dependence"
    layer = Column("layer", "str")
    method = Column("method", "str")
    between_projections = Column("between_projections", "float64",
                                 "similarity of one unit's projections of different images")
    between_projections_std = Column("between_projections_std", "float64")
    with_patches = Column("with_patches", "float64", "similarity of projection and patch")
    with_patches_std = Column("with_patches_std", "float64")
    n = Column("n", "int64")


TABLES: tuple[type[TableSchema], ...] = (Manifest, Classes, Skipped, Topk, Units, Selectivity,
                                         Histograms, Invariance, Sanity, InputDependence)


# -- stores ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArraySpec:
    """One array of a store: its name, dimension names and dtype."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    doc: str = ""


@dataclass(frozen=True)
class StoreSchema:
    """A zarr store: the arrays at its root, and those of each layer's group."""

    title: str
    root: tuple[ArraySpec, ...]
    per_layer: tuple[ArraySpec, ...] = ()
    doc: str = ""


_IMAGE_COORDS = (ArraySpec("image", ("image",), "int64", "the image's id (manifest)"),
                 ArraySpec("label", ("image",), "int32", "its true class"),
                 ArraySpec("path", ("image",), "str"),
                 ArraySpec("class_name", ("image",), "str"))
_TOP_IMAGES = (ArraySpec("image_id", ("unit", "rank"), "int64"),
               ArraySpec("label", ("unit", "rank"), "int32"),
               ArraySpec("path", ("unit", "rank"), "str"),
               ArraySpec("class_name", ("unit", "rank"), "str"))
_UNIT = ArraySpec("unit", ("unit",), "int32")
_CHANNEL = ArraySpec("channel", ("channel",), "str", "the input's channel names")
_METHOD = ArraySpec("method", ("method",), "str")

ACTIVATIONS_STORE = StoreSchema(
    "activations",
    (*_IMAGE_COORDS, ArraySpec("top", ("top",), "int32"),
     ArraySpec("pred", ("image", "top"), "int32", "the top classes; -1 for an unread image"),
     ArraySpec("prob", ("image", "top"), "float32")),
    (*_IMAGE_COORDS, _UNIT,
     ArraySpec("max", ("image", "unit"), "float32", "each unit's maximum per image"),
     ArraySpec("argmax", ("image", "unit"), "int32", "where, flat in the feature map"),
     ArraySpec("mean", ("image", "unit"), "float32")),
    "one group per analysed layer, written a chunk of images at a time")

PROJECTIONS_STORE = StoreSchema(
    "projections", (),
    (_CHANNEL, _METHOD, _UNIT, ArraySpec("rank", ("rank",), "int32"), *_TOP_IMAGES,
     ArraySpec("side", ("side",), "str"),
     ArraySpec("projections", ("method", "unit", "rank", "tile_y", "tile_x", "channel"),
               "float16", "cropped to the receptive field"),
     ArraySpec("projection_scale", ("method", "unit", "rank"), "float32"),
     ArraySpec("patches", ("unit", "rank", "tile_y", "tile_x", "channel"), "uint8"),
     ArraySpec("boxes", ("unit", "rank", "side"), "int32", "the field in the input"),
     ArraySpec("maps", ("unit", "rank", "map_y", "map_x"), "float32", "the feature maps"),
     ArraySpec("thumbs", ("unit", "rank", "thumb_y", "thumb_x", "channel"), "uint8")),
    "per layer: each unit's top-k projections, patches and images")

FEATUREVIS_STORE = StoreSchema(
    "featurevis", (),
    (_CHANNEL, _UNIT, ArraySpec("objective", ("objective",), "str", "'mean', 'centre'"),
     ArraySpec("images", ("unit", "y", "x", "channel"), "uint8",
               "the input that maximises the unit's mean over its map"),
     ArraySpec("centre", ("unit", "centre_y", "centre_x", "channel"), "uint8",
               "the receptive-field-sized input that maximises its centre cell"),
     ArraySpec("value", ("objective", "unit"), "float32", "the objective on the image"),
     ArraySpec("peak", ("objective", "unit"), "float32", "the map's largest activation on it"),
     ArraySpec("start", ("objective", "unit"), "float32", "the objective on the initial image"),
     ArraySpec("data_peak", ("unit",), "float32", "the largest activation on the data set"),
     ArraySpec("driven", ("objective", "unit"), "bool", "the optimisation raised the unit")),
    "per layer: each unit's optimised images (Lucid's recipe) and what they reach")

OCCLUSION_STORE = StoreSchema(
    "occlusion",
    (*_IMAGE_COORDS, _CHANNEL, ArraySpec("yx", ("yx",), "str"),
     ArraySpec("measure", ("measure",), "str"), ArraySpec("side", ("side",), "str"),
     ArraySpec("images", ("image", "y", "x", "channel"), "uint8"),
     ArraySpec("tracked_unit", ("image",), "int32", "the unit whose map is tracked"),
     ArraySpec("total", ("image", "row", "column"), "float32", "its map's total"),
     ArraySpec("prob_true", ("image", "row", "column"), "float32"),
     ArraySpec("predicted", ("image", "row", "column"), "int32"),
     ArraySpec("predicted_prob", ("image", "row", "column"), "float32"),
     ArraySpec("clean", ("image", "measure"), "float32", "the measures unoccluded"),
     ArraySpec("position", ("image", "yx"), "int32", "the tracked unit's strongest position"),
     ArraySpec("projection", ("image", "y", "x", "channel"), "float16"),
     ArraySpec("projection_scale", ("image",), "float32"),
     ArraySpec("box", ("image", "side"), "int32")),
    doc="Figure 7: per image and occluder position (row, column), the tracked map and class")

EVOLUTION_STORE = StoreSchema(
    "evolution", (),
    (_CHANNEL, _UNIT, ArraySpec("snapshot", ("snapshot",), "str"),
     ArraySpec("value", ("snapshot", "unit"), "float32", "the strongest activation"),
     ArraySpec("image_id", ("snapshot", "unit"), "int64"),
     ArraySpec("y", ("snapshot", "unit"), "int32"), ArraySpec("x", ("snapshot", "unit"), "int32"),
     ArraySpec("projections", ("snapshot", "unit", "tile_y", "tile_x", "channel"), "float16"),
     ArraySpec("projection_scale", ("snapshot", "unit"), "float32"),
     ArraySpec("patches", ("snapshot", "unit", "tile_y", "tile_x", "channel"), "uint8")),
    "Figure 4: per layer, each unit's strongest activation at each snapshot, projected")

SANITY_STORE = StoreSchema(
    "randomised projections", (),
    (_CHANNEL, _METHOD, _UNIT, ArraySpec("image_id", ("unit",), "int64"),
     ArraySpec("projections", ("method", "unit", "tile_y", "tile_x", "channel"), "float16"),
     ArraySpec("projection_scale", ("method", "unit"), "float32")),
    "every live unit's top-1 projection under fully randomised weights")
