"""Ranking: each unit's top images and statistics, computed with dask in one pass over the store."""

from pipeline.ranking.meta import RankMeta, read_rank_meta, write_topk
from pipeline.ranking.rank_run import QUANTILES, SELECTIVITY_TOP, RankTables, rank_store

__all__ = ["QUANTILES", "SELECTIVITY_TOP", "RankMeta", "RankTables", "rank_store",
           "read_rank_meta", "write_topk"]
