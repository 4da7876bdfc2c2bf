"""top_k is recorded once after rank: in the top-k table's own metadata."""

import pandas as pd

from pipeline.ranking import RankMeta, read_rank_meta, write_topk


def test_the_topk_table_carries_top_k_and_its_rows_are_unchanged(tmp_path):
    frame = pd.DataFrame({"layer": ["conv1", "conv1"], "unit": [0, 0], "rank": [0, 1],
                          "image_id": [3, 1], "value": [2.0, 1.0], "y": [0, 1], "x": [1, 0]})
    path = tmp_path / "topk.parquet"
    write_topk(frame, path, RankMeta(top_k=5))
    assert read_rank_meta(path) == RankMeta(5)  # 5, though no unit has more than 2 rows
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)
