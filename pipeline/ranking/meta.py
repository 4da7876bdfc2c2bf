"""What the rank stage's tables say about themselves: the one record of ``top_k`` downstream.

``topk.parquet`` carries it in its file metadata (key ``rank``, JSON), so every stage after rank
(deconv, render, compare, the notebook API) reads the number of images kept per unit from the
table whose rows it describes, never from the config (which may have changed since) or from a
copy in another store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.metadata import Metadata
from pipeline.schemas import Topk

META_KEY = b"rank"


@dataclass(frozen=True)
class RankMeta(Metadata):
    """``top_k``: the images kept per unit (a unit that fired in fewer has fewer rows)."""

    top_k: int


def write_topk(frame: pd.DataFrame, path: Path, meta: RankMeta) -> None:
    """Write the top-k table with ``meta`` in its file metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(Topk.conform(frame), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(meta.to_attrs()).encode()})
    pq.write_table(table, path)


def read_rank_meta(path: Path) -> RankMeta:
    """The metadata of the top-k table at ``path`` (read without its rows)."""
    import pyarrow.parquet as pq

    return RankMeta.from_attrs(json.loads(pq.read_schema(path).metadata[META_KEY]))
