"""The run's zarr stores read by xarray as they are: every array of a finished run opens with
``xarray.open_zarr`` under its declared dimension names, with its coordinates, and the same
values as zarr; ``Run.to_xarray`` and the README's xarray example work as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from support import pin_device

from pipeline.api import open_run
from pipeline.errors import UserError

xr = pytest.importorskip("xarray")

STORES = ("activations.zarr", "projections.zarr", "occlusion.zarr", "evolution.zarr")
README = Path(__file__).resolve().parents[1] / "README.md"


def _groups(store: zarr.Group) -> list[tuple[str | None, zarr.Group]]:
    return [(None, store), *((name, group) for name, group in store.groups())]


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        return np.array_equal(a, b, equal_nan=True)
    if a.dtype.kind in "OUT" or b.dtype.kind in "OUT":  # text, however numpy holds it
        return a.shape == b.shape and [str(v) for v in a.ravel()] == [str(v) for v in b.ravel()]
    return np.array_equal(a, b)


@pytest.fixture(scope="module")
def run_tables(tiny_run):
    run_dir = tiny_run / "runs" / "tiny"
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    names = pd.read_parquet(run_dir / "classes.parquet").set_index("label")["name"]
    return run_dir, manifest, names


def test_every_array_opens_in_xarray_with_its_dimensions_and_values(run_tables) -> None:
    run_dir, _, _ = run_tables
    opened = 0
    for store_name in STORES:
        path = run_dir / store_name
        assert path.is_dir(), store_name
        for group_name, group in _groups(zarr.open_group(path, mode="r")):
            arrays = dict(group.arrays())
            if not arrays:
                continue
            dataset = xr.open_zarr(path, group=group_name, consolidated=False)
            for name, array in arrays.items():
                dims = array.metadata.dimension_names
                where = f"{store_name}/{group_name or ''}/{name}"
                assert dims is not None and len(dims) == array.ndim, where
                assert name in dataset.variables, where
                assert dataset[name].dims == tuple(dims), where
                assert _equal(np.asarray(dataset[name].values), np.asarray(array[...])), where
                opened += 1
            # every dimension of the group is one of its coordinates, or a pixel/value axis
            for dim in dataset.dims:
                assert dim in dataset.coords or dim in ("tile_y", "tile_x", "thumb_y",
                                                        "thumb_x", "map_y", "map_x", "y", "x",
                                                        "row", "column"), (store_name, dim)
    assert opened > 60


def test_activation_groups_carry_the_images_and_units(run_tables) -> None:
    run_dir, manifest, names = run_tables
    path = run_dir / "activations.zarr"
    layers = zarr.open_group(path, mode="r").attrs["layers"]
    for layer in [None, *layers]:
        dataset = xr.open_zarr(path, group=layer, consolidated=False)
        assert dataset["image"].values.tolist() == list(range(len(manifest)))
        assert dataset["path"].values.tolist() == manifest["path"].tolist()
        assert dataset["label"].values.tolist() == manifest["label"].tolist()
        assert dataset["class_name"].values.tolist() == \
            names.loc[manifest["label"]].astype(str).tolist()
        for variable in ("max", "argmax", "mean") if layer else ("pred", "prob"):
            assert {"path", "label", "class_name"} <= set(dataset[variable].coords), variable
        if layer:
            assert dataset["unit"].values.tolist() == list(range(dataset.sizes["unit"]))
            assert dataset["max"].dims == ("image", "unit")


def test_projection_groups_name_each_top_image(run_tables) -> None:
    run_dir, manifest, names = run_tables
    topk = pd.read_parquet(run_dir / "topk.parquet")
    path = run_dir / "projections.zarr"
    for layer, rows in topk.groupby("layer"):
        dataset = xr.open_zarr(path, group=layer, consolidated=False)
        assert dataset["method"].values.tolist() == ["deconvnet", "guided", "gradient"]
        assert dataset["projections"].dims == ("method", "unit", "rank", "tile_y", "tile_x",
                                               "channel")
        image_id = dataset["image_id"].values
        for row in rows.itertuples():
            assert image_id[row.unit, row.rank] == row.image_id
            assert dataset["path"].values[row.unit, row.rank] == \
                manifest["path"].iloc[row.image_id]
            assert dataset["class_name"].values[row.unit, row.rank] == \
                names[manifest["label"].iloc[row.image_id]]
        assert (image_id >= 0).sum() == len(rows)


def test_occlusion_and_evolution_coordinates(run_tables) -> None:
    run_dir, manifest, names = run_tables
    occlusion = xr.open_zarr(run_dir / "occlusion.zarr", consolidated=False)
    ids = occlusion["image"].values
    assert occlusion["path"].values.tolist() == manifest["path"].iloc[ids].tolist()
    assert occlusion["label"].values.tolist() == manifest["label"].iloc[ids].tolist()
    assert occlusion["total"].dims == ("image", "row", "column")
    assert occlusion["measure"].values.tolist()[:2] == ["peak", "total"]
    evolution = zarr.open_group(run_dir / "evolution.zarr", mode="r")
    for layer in evolution.attrs["layers"]:
        dataset = xr.open_zarr(run_dir / "evolution.zarr", group=layer, consolidated=False)
        assert dataset["snapshot"].values.tolist() == evolution.attrs["snapshots"]
        assert dataset["value"].dims == ("snapshot", "unit")


def test_to_xarray_groups_by_class(tiny_run, run_tables) -> None:
    run_dir, manifest, names = run_tables
    run = open_run(tiny_run / "workflows" / "tiny.toml", base=tiny_run)
    dataset = run.to_xarray("conv2")
    assert isinstance(dataset["class_name"].variable._data, np.ndarray)  # loaded
    got = dataset["max"].sel(unit=5).groupby("class_name").mean().to_series()
    values = zarr.open_array(run_dir / "activations.zarr", path="conv2/max", mode="r")[:, 5]
    expected = pd.Series(values).groupby(names.loc[manifest["label"]].to_numpy()).mean()
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False,
                                   check_dtype=False, rtol=1e-6,
                                   check_index_type=False)
    assert run.to_xarray(store="projections").attrs["methods"] == \
        ["deconvnet", "guided", "gradient"]
    with pytest.raises(UserError, match=r"no layer 'conv9'; layers: conv1, conv2"):
        run.to_xarray("conv9")
    with pytest.raises(UserError, match=r"store 'topk': choose one of activations"):
        run.to_xarray("conv1", store="topk")


def test_the_readme_xarray_example_runs_as_written(tiny_run, tmp_path, monkeypatch,
                                                   capsys) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### With xarray"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # the README speaks of the demo: the tiny run, under the demo's name
    (tmp_path / "workflows").mkdir()
    shutil.copy(tiny_run / "workflows" / "tiny.toml", tmp_path / "workflows" / "demo.toml")
    shutil.copytree(tiny_run / "runs" / "tiny", tmp_path / "runs" / "demo")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    run_dir = tmp_path / "runs" / "demo"
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    names = pd.read_parquet(run_dir / "classes.parquet").set_index("label")["name"]
    values = zarr.open_array(run_dir / "activations.zarr", path="conv5/max", mode="r")[:, 3]
    means = pd.Series(values).groupby(names.loc[manifest["label"]].to_numpy()).mean()
    listed = [line.split()[0] for line in printed if line.split() and line.split()[0] in means]
    assert listed == means.sort_values(ascending=False).index.tolist()  # most driving first
    assert printed[-1] == manifest["path"].iloc[int(np.nanargmax(values))]


def test_a_store_written_before_dimension_names_says_what_to_rerun(tmp_path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "old.toml").write_text(pin_device(
        '[data]\nsource = "synthetic"\n[model]\nname = "zfnet_small"\n'))
    store = zarr.open_group(tmp_path / "runs" / "old" / "activations.zarr", mode="w")
    store.create_group("conv1").create_array("max", shape=(2, 3), dtype="float32")
    run = open_run(tmp_path / "workflows" / "old.toml", base=tmp_path)
    with pytest.raises(UserError, match=r"activations.zarr: written before release 0.7.0, "
                       r"without dimension names; run `python -m pipeline run activations"):
        run.to_xarray("conv1")
