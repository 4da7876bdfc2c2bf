"""A small Python API for notebooks: open a finished run, get its tables and activations.

    >>> from pipeline.api import open_run
    >>> run = open_run("workflows/demo.toml")
    >>> run.units.sort_values("class_entropy").head()      # the most class-selective units
    >>> run.top_images("conv5", 3)                         # unit conv5/3's top images
    >>> run.activations("conv5").mean(axis=0).compute()    # a dask array [N, C]
    >>> run.to_xarray("conv5")["max"].groupby("class_name").mean()   # labelled (xarray)

Tables are pandas DataFrames read from the run's parquet files by the catalog's readers
(:mod:`pipeline.catalog`; read once, then cached), their columns as :mod:`pipeline.schemas`
names them; activations are dask arrays over the zarr store, so nothing is loaded until computed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline import catalog
from pipeline.catalog import Artifact
from pipeline.config import Workflow, load_workflow
from pipeline.errors import UserError
from pipeline.layout import RunLayout
from pipeline.schemas import Classes, Manifest, Topk

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

#: The run's zarr stores that `Run.to_xarray` opens, by name.
_ZARR_STORES = {item.name: item for item in (catalog.ACTIVATIONS, catalog.PROJECTIONS,
                                             catalog.EVOLUTION, catalog.OCCLUSION)}


def open_run(workflow: str | Path = "workflows/demo.toml", base: str | Path | None = None) -> Run:
    """The run of ``workflow`` under ``base`` (default: the current directory, as the CLI)."""
    loaded = load_workflow(Path(workflow))
    return Run(loaded, RunLayout(base=Path(base or Path.cwd()).absolute(), workflow=loaded.name))


class Run:
    """One workflow's run folder, read-only."""

    def __init__(self, workflow: Workflow, layout: RunLayout) -> None:
        self.workflow = workflow
        self.layout = layout

    def __repr__(self) -> str:
        return f"Run({self.workflow.name!r}, {self.layout.run_dir})"

    def status(self) -> pd.DataFrame:
        """One row per stage: state (done, stale, missing, off), finish time, seconds."""
        from pipeline.runner import Runner

        return pd.DataFrame([row.__dict__ for row in Runner(self.workflow, self.layout).status()])

    def path(self, item: Artifact | str) -> Path:
        """Where the run keeps ``item`` (a catalog artifact, or its name: 'topk')."""
        return (catalog.artifact(item) if isinstance(item, str) else item).path(self.layout)

    def _written(self, item: Artifact) -> Path:
        """The path of ``item``; an error naming the stage that writes it (from the registry)
        when it is not there yet."""
        from pipeline.stages import stage_writing

        path = item.path(self.layout)
        if not path.exists():
            raise UserError(f"{path}: not written yet; run `python -m pipeline run "
                            f"{stage_writing(item).name} -w {self.workflow.source}` first")
        return path

    def _table(self, item: Artifact) -> pd.DataFrame:
        return item.read(self._written(item))

    @cached_property
    def manifest(self) -> pd.DataFrame:
        """image_id, path (relative to the data root), label (``pipeline.schemas.Manifest``)."""
        return self._table(catalog.MANIFEST)

    @cached_property
    def classes(self) -> pd.DataFrame:
        """The class table: label and name, in the model's class order."""
        return self._table(catalog.CLASSES)

    @cached_property
    def skipped(self) -> pd.DataFrame:
        """Unreadable images: image_id, path, reason."""
        return self._table(catalog.SKIPPED)

    @cached_property
    def topk(self) -> pd.DataFrame:
        """layer, unit, rank, image_id, value, y, x: each unit's top images."""
        return self._table(catalog.TOPK)

    @cached_property
    def units(self) -> pd.DataFrame:
        """Per-unit statistics: peak, mean/std of the per-image max, fraction active, quantiles
        (q50 ... q999), dead, top class with its share and the entropy of the top-100 classes."""
        return self._table(catalog.UNITS)

    @cached_property
    def selectivity(self) -> pd.DataFrame:
        """layer, unit, class, count: the true classes of each unit's top-100 images."""
        return self._table(catalog.SELECTIVITY)

    @cached_property
    def histograms(self) -> pd.DataFrame:
        """layer, unit, low, high, count: non-empty bins of each unit's per-image maxima."""
        return self._table(catalog.HISTOGRAMS)

    @cached_property
    def top_k(self) -> int:
        """Images kept per unit, as the rank stage recorded it (not the config, which may have
        changed since)."""
        from pipeline.ranking import read_rank_meta

        return read_rank_meta(self._written(catalog.TOPK)).top_k

    @property
    def layers(self) -> list[str]:
        """The analysed layers' labels (conv1, conv2, ...), in network order."""
        from pipeline.inference.store import StoreMeta

        return list(StoreMeta.from_attrs(self._store().attrs).layers)

    def activations(self, layer: str, summary: str = "max") -> da.Array:
        """The ``[N, C]`` dask array of ``summary`` ('max', 'argmax' or 'mean') of ``layer``."""
        import dask.array as da

        from pipeline.inference.store import SUMMARIES

        if layer not in self.layers:
            raise UserError(f"{self.path(catalog.ACTIVATIONS)}: no layer {layer!r}; layers: "
                            f"{', '.join(self.layers)}")
        if summary not in SUMMARIES:
            raise UserError(f"summary {summary!r}: choose one of {', '.join(SUMMARIES)}")
        return da.from_zarr(str(self.path(catalog.ACTIVATIONS)), component=f"{layer}/{summary}")

    def top_images(self, layer: str, unit: int) -> pd.DataFrame:
        """Unit ``layer/unit``'s top images with their paths and class names."""
        rows = self.topk[(self.topk[Topk.layer] == layer) & (self.topk[Topk.unit] == unit)]
        names = self.classes.set_index(Classes.class_index)[Classes.name]
        rows = rows.merge(self.manifest[Manifest.names()], on=Topk.image_id)
        return rows.assign(class_name=rows[Manifest.class_index].map(names)).reset_index(
            drop=True)

    def to_xarray(self, layer: str | None = None, store: str = "activations") -> xr.Dataset:
        """``layer``'s group of a zarr store (default the activations; also "projections",
        "evolution", "occlusion"; no layer: the store's root) as an xarray Dataset: named
        dimensions, coordinates (image ids, paths, labels, class names; units, ranks, ...),
        data as lazy dask arrays and the coordinates in memory, so ``groupby("class_name")``
        works at once. Needs xarray (``pip install -e ".[xarray]"``)."""
        try:
            import xarray as xr
        except ImportError:
            raise UserError('to_xarray needs xarray: pip install -e ".[xarray]" (or pip '
                            'install xarray)') from None
        import zarr

        from pipeline.labelled import group_in
        from pipeline.stages import stage_writing

        if store not in _ZARR_STORES:
            raise UserError(f"store {store!r}: choose one of {', '.join(_ZARR_STORES)}")
        item = _ZARR_STORES[store]
        path = self._written(item)
        root = zarr.open_group(str(path), mode="r")
        if layer is not None and not isinstance(root.get(layer), zarr.Group):
            groups = sorted(name for name, _ in root.groups())
            raise UserError(f"{path}: no layer {layer!r}; layers: {', '.join(groups) or 'none'}"
                            " (no layer: the store's root)")
        group = root if layer is None else group_in(root, layer)
        # (a zarr v2 array, which no stage writes, has no dimension names at all)
        if any(getattr(array.metadata, "dimension_names", None) is None
               for _, array in group.arrays()):
            stage = stage_writing(item).name
            raise UserError(f"{path}: written before release 0.7.0, without dimension names; "
                            f"run `python -m pipeline run {stage} -w {self.workflow.source}` "
                            "(or `run all`) to write it again")
        dataset = xr.open_zarr(path, group=layer, consolidated=False)
        return dataset.assign_coords({name: dataset[name].load()
                                      for name in dataset.coords})

    def _store(self):
        import zarr

        return zarr.open_group(str(self._written(catalog.ACTIVATIONS)), mode="r")
