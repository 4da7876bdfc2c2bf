"""The one object that owns every path of a run; nothing else builds output paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.models.train_run import TrainingFiles


@dataclass(frozen=True)
class RunLayout:
    """Paths of one workflow's run: intermediate data in ``runs/<name>/``, the atlas in
    ``reports/<name>/``, both under ``base`` (the directory the user runs the pipeline from)."""

    base: Path
    workflow: str

    @property
    def run_dir(self) -> Path:
        return self.base / "runs" / self.workflow

    @property
    def report_dir(self) -> Path:
        return self.base / "reports" / self.workflow

    @property
    def index_html(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def synthetic_data(self) -> Path:
        """Where the demo's generated image folder lives (``train/`` and ``val/`` inside)."""
        return self.run_dir / "data"

    @property
    def synthetic_settings(self) -> Path:
        """The generator's settings, written beside the demo's images: they stand for the
        images in the prepare stage's digest (the generator is deterministic)."""
        return self.synthetic_data / "synthetic.json"

    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.parquet"

    @property
    def train_manifest(self) -> Path:
        return self.run_dir / "train_manifest.parquet"

    @property
    def classes(self) -> Path:
        return self.run_dir / "classes.parquet"

    @property
    def data_warnings(self) -> Path:
        """What the prepare stage found wrong with the data folders (only when it found any)."""
        return self.run_dir / "data_warnings.json"

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def checkpoint(self, epoch: int) -> Path:
        return self.training_files.checkpoint(epoch)

    @property
    def training_files(self) -> TrainingFiles:
        """The train stage's checkpoints and snapshots (their naming rule)."""
        from pipeline.models.train_run import TrainingFiles

        return TrainingFiles(self.checkpoints, self.snapshots)

    @property
    def snapshots(self) -> Path:
        """The weights kept at ``[train] snapshot_epochs`` for the evolution stage."""
        return self.run_dir / "snapshots"

    def snapshot(self, epoch: int) -> Path:
        return self.training_files.snapshot(epoch)

    @property
    def model(self) -> Path:
        return self.run_dir / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.json"

    @property
    def activations(self) -> Path:
        return self.run_dir / "activations.zarr"

    @property
    def skipped(self) -> Path:
        return self.run_dir / "skipped.parquet"

    @property
    def top_maps(self) -> Path:
        return self.run_dir / "top_maps"

    @property
    def topk(self) -> Path:
        return self.run_dir / "topk.parquet"

    @property
    def units(self) -> Path:
        return self.run_dir / "units.parquet"

    @property
    def selectivity(self) -> Path:
        return self.run_dir / "selectivity.parquet"

    @property
    def histograms(self) -> Path:
        return self.run_dir / "histograms.parquet"

    @property
    def projections(self) -> Path:
        return self.run_dir / "projections.zarr"

    @property
    def featurevis(self) -> Path:
        """Each unit's optimised images (see ``pipeline.featurevis.store``)."""
        return self.run_dir / "featurevis.zarr"

    @property
    def occlusion(self) -> Path:
        """Figure 7: occlusion maps and projections of the sampled images."""
        return self.run_dir / "occlusion.zarr"

    @property
    def evolution(self) -> Path:
        """Figure 4: each unit's strongest activation per snapshot, projected."""
        return self.run_dir / "evolution.zarr"

    @property
    def invariance(self) -> Path:
        """Figure 5: distances and probabilities under transformations, one row per image and
        transformed copy."""
        return self.run_dir / "invariance.parquet"

    @property
    def sanity(self) -> Path:
        """Sanity checks: per layer, method and cascade step, trained against randomised
        projections (see ``pipeline.sanity.store``)."""
        return self.run_dir / "sanity.parquet"

    @property
    def input_dependence(self) -> Path:
        """Sanity checks: per layer and method, how much the projections follow their images."""
        return self.run_dir / "input_dependence.parquet"

    @property
    def randomised_projections(self) -> Path:
        """Sanity checks: every live unit's top-1 projection under fully randomised weights."""
        return self.run_dir / "sanity.zarr"

    @property
    def stamps(self) -> Path:
        return self.run_dir / "stamps"

    def stamp(self, stage: str) -> Path:
        return self.stamps / f"{stage}.json"

    @property
    def log(self) -> Path:
        return self.run_dir / "pipeline.log"

    @property
    def lock(self) -> Path:
        return self.run_dir / ".lock"

    @staticmethod
    def comparison(base: Path, first: str, second: str) -> Path:
        """The site ``compare`` writes for two runs: ``reports/<first>-vs-<second>/``."""
        return base / "reports" / f"{first}-vs-{second}"

    @staticmethod
    def staging(final: Path, resumable: bool = False) -> Path:
        """The temporary name an output is written under before it is moved into place.

        A resumable output keeps one fixed name across runs so a killed stage can continue it.
        """
        suffix = "partial" if resumable else "tmp"
        return final.parent / f".{final.name}.{suffix}"
