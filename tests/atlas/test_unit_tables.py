"""A layer's selectivity and histogram tables, split per unit at once for the unit pages: each
unit's classes most frequent first (ties to the lower class), its histogram bins in table order
without the bin that holds zero, and that bin's count; units without rows (no positive top
image) and ranges with no rows at all get nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.atlas.gather import _unit_classes, _unit_histograms

NAMES = [f"class {i}" for i in range(6)]


def test_each_unit_s_classes_are_ordered_by_count_then_class():
    table = pd.DataFrame({"layer": "conv1", "unit": [3, 1, 3, 3, 1, 3],
                          "class": [5, 2, 0, 4, 1, 2], "count": [2, 7, 9, 2, 7, 1]})
    found = _unit_classes(table, NAMES)
    assert found == {1: ((1, "class 1", 7), (2, "class 2", 7)),
                     3: ((0, "class 0", 9), (4, "class 4", 2), (5, "class 5", 2),
                         (2, "class 2", 1))}


def test_each_unit_s_histogram_keeps_table_order_and_counts_the_zero_bin_apart():
    table = pd.DataFrame({"layer": "conv1", "unit": [0, 2, 0, 0, 2],
                          "low": np.array([1.0, -0.5, -0.25, 0.5, 0.0], np.float32),
                          "high": np.array([2.0, 0.5, 0.25, 1.0, 1.0], np.float32),
                          "count": [4, 6, 10, 3, 1]})
    found = _unit_histograms(table)
    assert found == {0: (((1.0, 2.0, 4), (0.5, 1.0, 3)), 10),
                     2: (((0.0, 1.0, 1),), 6)}


def test_a_range_of_units_without_rows_gets_nothing():
    empty = pd.DataFrame({"layer": pd.Series([], dtype=str), "unit": pd.Series([], dtype=int),
                          "class": pd.Series([], dtype=int), "count": pd.Series([], dtype=int),
                          "low": pd.Series([], dtype=np.float32),
                          "high": pd.Series([], dtype=np.float32)})
    assert _unit_classes(empty, NAMES) == {}
    assert _unit_histograms(empty) == {}
