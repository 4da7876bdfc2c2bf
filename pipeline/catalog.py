"""The catalog: every thing a run holds, as one typed object each (after kedro's data catalog).

An :class:`Artifact` is a file, table, store or folder in the run: where it is (a
``RunLayout`` path, reached by an attribute, never by a string), what it holds (a table or
store schema of :mod:`pipeline.schemas`, or the metadata record a store keeps in its
attributes), how it is read, and which stage writes it. An :class:`External` is what a stage
reads from outside the run folder (the user's weights file, the image folders): it has no
writer, and the runner digests it into the key of the stages that read it.

Stages declare what they read and write as these objects (``register_stage(reads=...,
writes=...)``); the runner derives each stage's inputs, its stamp key and its outputs from
them, and a stage can open only what it declared (:class:`pipeline.stages.context.StageContext`).
``docs/architecture.md`` is generated from it (``python -m pipeline.architecture``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline import schemas
from pipeline.layout import RunLayout

if TYPE_CHECKING:
    from pipeline.config import Workflow

Kind = Literal["table", "store", "json", "weights", "folder", "site"]


@dataclass(frozen=True, eq=False)
class Artifact:
    """One thing a run holds.

    ``digested``: its bytes are part of its stage's content digest, so the stages that read
    it follow its content (the demo's generated image folder is not: its settings file stands
    for it). ``when``: a config option ('section.option') whose empty value means the stage
    does not write it. ``resumable``: a killed stage continues its staged copy. ``sharded``:
    its stage fills it in shares (``--shard I/N`` processes or dask tasks), the last share
    to finish committing it.
    """

    name: str
    locate: Callable[[RunLayout], Path]
    kind: Kind
    doc: str
    table: type[schemas.TableSchema] | None = None
    store: schemas.StoreSchema | None = None
    meta: str = ""  # the dataclass its attributes are read into, 'module:Class'
    digested: bool = True
    when: str = ""
    resumable: bool = False
    sharded: bool = False

    def __repr__(self) -> str:
        return f"Artifact({self.name!r})"

    def path(self, layout: RunLayout) -> Path:
        return self.locate(layout)

    def written(self, workflow: Workflow | Any) -> bool:
        """Whether its stage writes it under ``workflow`` (see ``when``)."""
        if not self.when:
            return True
        section, _, option = self.when.partition(".")
        return bool(getattr(workflow.section(section), option))

    def read(self, path: Path) -> Any:
        """What the file at ``path`` holds: a checked DataFrame for a table, the zarr group
        (read-only) for a store, the parsed JSON, else the path itself."""
        if self.table is not None:
            return self.table.read(path)
        if self.kind == "store":
            import zarr

            return zarr.open_group(str(path), mode="r")
        if self.kind == "json":
            from pipeline.atomic import read_json

            return read_json(path)
        return path

    def write(self, value: Any, path: Path) -> None:
        """Write the table ``value`` (a DataFrame) at ``path``, checked against its schema.
        Stores and files are written by the library code that makes them, into the path the
        stage's context gives."""
        if self.table is None:
            raise TypeError(f"{self.name} is a {self.kind}: its stage writes it in place")
        self.table.write(value, path)


@dataclass(frozen=True, eq=False)
class External:
    """What a stage reads from outside the run folder; its digest goes into the stage's key
    under ``name`` (see :func:`pipeline.stamps.external_digest`)."""

    name: str
    doc: str

    def __repr__(self) -> str:
        return f"External({self.name!r})"


# -- prepare ---------------------------------------------------------------------------------

MANIFEST = Artifact("manifest", lambda layout: layout.manifest, "table",
                    "the analysed images, in store order", table=schemas.Manifest)
TRAIN_MANIFEST = Artifact("train_manifest", lambda layout: layout.train_manifest, "table",
                          "the training images (only when the workflow trains)",
                          table=schemas.Manifest)
CLASSES = Artifact("classes", lambda layout: layout.classes, "table",
                   "the model's classes, in its output order", table=schemas.Classes)
SYNTHETIC_DATA = Artifact("synthetic_data", lambda layout: layout.synthetic_data, "folder",
                          "the demo's generated images (train/ and val/)", digested=False)
SYNTHETIC_SETTINGS = Artifact("synthetic_settings", lambda layout: layout.synthetic_settings,
                              "json", "the generator's settings: they stand for its images")
DATA_WARNINGS = Artifact("data_warnings", lambda layout: layout.data_warnings, "json",
                         "what prepare found wrong with the data folders (when anything)")

# -- train -----------------------------------------------------------------------------------

MODEL = Artifact("model", lambda layout: layout.model, "weights",
                 "the trained weights (a state dict)")
METRICS = Artifact("metrics", lambda layout: layout.metrics, "json",
                   "the training's accuracy and losses per epoch")
SNAPSHOTS = Artifact("snapshots", lambda layout: layout.snapshots, "folder",
                     "weights at [train] snapshot_epochs, for Figure 4",
                     when="train.snapshot_epochs")

# -- activations -----------------------------------------------------------------------------

ACTIVATIONS = Artifact("activations", lambda layout: layout.activations, "store",
                       "each unit's max, argmax and mean per image; predictions",
                       store=schemas.ACTIVATIONS_STORE,
                       meta="pipeline.inference.store:StoreMeta", resumable=True, sharded=True)
SKIPPED = Artifact("skipped", lambda layout: layout.skipped, "table",
                   "images that could not be read, and why", table=schemas.Skipped)
TOP_MAPS = Artifact("top_maps", lambda layout: layout.top_maps, "folder",
                    "each unit's whole maps in its strongest images, kept during the passes "
                    "for deconv (pipeline.inference.top_maps)", resumable=True, sharded=True,
                    # a cache: a resumed run or another top_k keeps other maps, and a map
                    # missing only costs deconv a forward pass, so its bytes make nothing stale
                    digested=False)

# -- rank ------------------------------------------------------------------------------------

TOPK = Artifact("topk", lambda layout: layout.topk, "table",
                "each unit's top images, value and position", table=schemas.Topk,
                meta="pipeline.ranking.meta:RankMeta")
UNITS = Artifact("units", lambda layout: layout.units, "table",
                 "per-unit statistics and class selectivity", table=schemas.Units)
SELECTIVITY = Artifact("selectivity", lambda layout: layout.selectivity, "table",
                       "the classes of each unit's top images", table=schemas.Selectivity)
HISTOGRAMS = Artifact("histograms", lambda layout: layout.histograms, "table",
                      "each unit's histogram of per-image maxima", table=schemas.Histograms)

# -- deconv, featurevis and the experiments ---------------------------------------------------

PROJECTIONS = Artifact("projections", lambda layout: layout.projections, "store",
                       "the top activations projected to pixel space, with their patches",
                       store=schemas.PROJECTIONS_STORE,
                       meta="pipeline.interp.projection_meta:ProjectionsMeta", resumable=True)
FEATUREVIS = Artifact("featurevis", lambda layout: layout.featurevis, "store",
                      "each unit's optimised images: the input it wants, and what it reaches",
                      store=schemas.FEATUREVIS_STORE,
                      meta="pipeline.featurevis.meta:FeatureVisMeta", resumable=True)
OCCLUSION = Artifact("occlusion", lambda layout: layout.occlusion, "store",
                     "Figure 7: occlusion maps and projections", store=schemas.OCCLUSION_STORE,
                     meta="pipeline.experiments.occlusion_run:OcclusionMeta")
EVOLUTION = Artifact("evolution", lambda layout: layout.evolution, "store",
                     "Figure 4: the strongest activation per unit and snapshot",
                     store=schemas.EVOLUTION_STORE,
                     meta="pipeline.experiments.evolution_run:EvolutionMeta")
INVARIANCE = Artifact("invariance", lambda layout: layout.invariance, "table",
                      "Figure 5: distances and probabilities under transformations",
                      table=schemas.Invariance)
SANITY = Artifact("sanity", lambda layout: layout.sanity, "table",
                  "sanity checks: trained against randomised projections, per cascade step",
                  table=schemas.Sanity)
INPUT_DEPENDENCE = Artifact("input_dependence", lambda layout: layout.input_dependence, "table",
                            "sanity checks: how much projections follow their images",
                            table=schemas.InputDependence)
RANDOMISED_PROJECTIONS = Artifact(
    "randomised_projections", lambda layout: layout.randomised_projections, "store",
    "sanity checks: top-1 projections under fully randomised weights",
    store=schemas.SANITY_STORE, meta="pipeline.sanity.store:SanityMeta")

# -- render ----------------------------------------------------------------------------------

ATLAS = Artifact("atlas", lambda layout: layout.report_dir, "site",
                 "the static HTML atlas (reports/<workflow>/)")

# -- outside the run folder ------------------------------------------------------------------

WEIGHTS_FILE = External("weights", "the content of [model] checkpoint")
MODEL_FILE = External("model_file", "the content of the file defining [model] factory")
IMAGE_LISTING = External("listing", "the image folders' listing: names, sizes, times")
IMAGES = External("images", "the files the stage's manifests list: names, sizes, times")
EVOLUTION_CHECKPOINTS = External("checkpoints", "the content of [evolution] checkpoints")

#: What every stage that runs the analysed model over the analysed images reads: the model's
#: weights (the run's own, or [model] checkpoint's) and the file defining it, and the images
#: (their manifest, the classes they are labelled in, their files; the demo's generated folder).
ANALYSED_MODEL = (MODEL, WEIGHTS_FILE, MODEL_FILE)
ANALYSED_IMAGES = (MANIFEST, CLASSES, IMAGES, SYNTHETIC_DATA)

ARTIFACTS: tuple[Artifact, ...] = tuple(
    value for value in globals().values() if isinstance(value, Artifact))
EXTERNALS: tuple[External, ...] = tuple(
    value for value in globals().values() if isinstance(value, External))


def artifact(name: str) -> Artifact:
    """The artifact called ``name`` (the notebook API's ``run.path('topk')``)."""
    for item in ARTIFACTS:
        if item.name == name:
            return item
    raise KeyError(name)


def meta_class(item: Artifact) -> type:
    """The dataclass ``item``'s attributes are read into (``from_attrs``)."""
    import importlib

    module, _, name = item.meta.partition(":")
    return getattr(importlib.import_module(module), name)
