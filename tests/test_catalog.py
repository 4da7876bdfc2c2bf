"""The catalog is the map of the run: its page is the code's, and its schemas are what the stages
write (checked against a real finished run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from pipeline import architecture, catalog
from pipeline.layout import RunLayout
from pipeline.schemas import TABLES, Column, TableSchema, Topk, Units

ROOT = Path(__file__).parents[1]


def test_the_architecture_page_is_generated_from_the_catalog():
    page = (ROOT / architecture.ARCHITECTURE_PAGE).read_text(encoding="utf-8")
    assert page == architecture.architecture_page(), \
        "docs/architecture.md is out of date: run `python -m pipeline.architecture`"
    development = (ROOT / "README.md").read_text(encoding="utf-8").split("## Development")[1]
    assert "docs/architecture.md" in development.split("\n## ")[0]


def test_every_artifact_has_a_reader_and_its_metadata_record_resolves():
    for item in catalog.ARTIFACTS:
        assert item.doc, item.name
        if item.kind == "table":
            assert item.table is not None, item.name
        if item.kind == "store":
            assert item.store is not None and item.meta, item.name
            record = catalog.meta_class(item)
            assert dataclasses.is_dataclass(record) and hasattr(record, "from_attrs"), item.name
    assert {item.table for item in catalog.ARTIFACTS if item.table} <= set(TABLES)


def test_a_column_is_its_name_and_a_table_missing_one_is_refused_in_one_line(tmp_path):
    assert Topk.unit == "unit" and isinstance(Topk.unit, Column) and Topk.unit.dtype == "int32"
    assert Units.names()[:3] == ["layer", "unit", "peak"]
    from pipeline.ranking import QUANTILES
    from pipeline.ranking.rank_run import quantile_column

    assert [quantile_column(q) for q in QUANTILES] == [Units.q50, Units.q90, Units.q99,
                                                       Units.q999]
    path = tmp_path / "units.parquet"
    pd.DataFrame({"layer": ["conv1"], "unit": [0]}).to_parquet(path)
    with pytest.raises(Exception) as refused:
        Units.read(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a units table (no column 'peak'") and "\n" not in \
        message


@pytest.mark.slow
def test_the_tables_and_stores_a_run_writes_are_their_schemas(tiny_run):
    """Every column and dtype of every table, every array and its dimensions of every store,
    and every store's attributes read back into its metadata record, on a finished run."""
    import zarr

    layout = RunLayout(tiny_run, "tiny")
    checked = 0
    for item in catalog.ARTIFACTS:
        path = item.path(layout)
        if not path.exists():
            continue
        if item.table is not None:
            frame = pd.read_parquet(path)
            schema: type[TableSchema] = item.table
            assert list(frame.columns) == schema.names(), item.name
            if len(frame):
                for column in schema.columns():
                    kind = "str" if frame[column].dtype.kind in "OUT" or str(
                        frame[column].dtype).startswith("str") else str(frame[column].dtype)
                    assert kind == column.dtype, (item.name, column, frame[column].dtype)
            checked += 1
        elif item.store is not None:
            root = zarr.open_group(str(path), mode="r")
            catalog.meta_class(item).from_attrs(root.attrs)
            groups = [group for _, group in root.groups()]
            for arrays, spec in ((dict(root.arrays()), item.store.root),
                                 *((dict(group.arrays()), item.store.per_layer)
                                   for group in groups)):
                assert sorted(arrays) == sorted(a.name for a in spec), item.name
                for a in spec:
                    assert tuple(arrays[a.name].metadata.dimension_names) == a.dims, \
                        (item.name, a.name)
                    dtype = arrays[a.name].dtype
                    assert (a.dtype == "str" and dtype.kind in "OUT") or str(dtype) == a.dtype \
                        or "String" in str(dtype), (item.name, a.name, dtype)
            checked += 1
    assert checked >= 14
