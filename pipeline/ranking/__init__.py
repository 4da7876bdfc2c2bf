"""Ranking: each unit's top images and statistics, computed with dask in one pass over the store.

The names below are imported on first use (:mod:`pipeline.lazy`): the atlas's workers read
class priors (:mod:`pipeline.ranking.picks`) and need no dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_names

if TYPE_CHECKING:
    from pipeline.ranking.meta import RankMeta, read_rank_meta, write_topk
    from pipeline.ranking.rank_run import QUANTILES, SELECTIVITY_TOP, RankTables, rank_store

__all__ = ["QUANTILES", "SELECTIVITY_TOP", "RankMeta", "RankTables", "rank_store",
           "read_rank_meta", "write_topk"]

__getattr__ = lazy_names(__name__, {
    "RankMeta": "meta", "read_rank_meta": "meta", "write_topk": "meta",
    "QUANTILES": "rank_run", "SELECTIVITY_TOP": "rank_run", "RankTables": "rank_run",
    "rank_store": "rank_run"})
