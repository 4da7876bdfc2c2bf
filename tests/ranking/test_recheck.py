"""A bfloat16 store's candidates re-ordered by float32 values (pipeline.ranking.recheck)."""

import numpy as np

from pipeline.ranking.partials import Partial
from pipeline.ranking.recheck import MARGIN, candidate_images, candidate_rows, recheck


def _partial(values: np.ndarray, ids: np.ndarray) -> Partial:
    channels = values.shape[1]
    return Partial(values.astype(np.float32), ids.astype(np.int64), 100, np.zeros(channels),
                   np.zeros(channels), np.zeros(channels, np.int64), np.zeros((channels, 4),
                                                                              np.int32))


def test_candidates_are_twice_k_and_all_within_the_margin_of_the_kth():
    k = 2
    near = 1.0 - MARGIN / 2  # within the margin of the k-th value (1.0)
    values = np.array([[3.0, 5.0], [1.0, 4.0], [near, 0.5], [near, -np.inf], [0.2, -np.inf],
                       [0.1, -np.inf]])
    # unit 0: 2k = 4 rows, and none past them is near 1.0; unit 1: only 3 finite rows
    assert candidate_rows(values, k).tolist() == [4, 3]
    values[4, 0] = near
    assert candidate_rows(values, k).tolist() == [5, 3]


def test_recheck_orders_candidates_by_float32_with_ties_to_the_lower_image():
    # bfloat16 says image 7 > 3 > 5 > 9 for the unit; float32 says 5 and 9 tie at the top
    values = np.array([[2.0], [1.9], [1.8], [1.7], [0.1]])
    ids = np.array([[7], [3], [5], [9], [1]])
    part = _partial(values, ids)
    exact = {7: 1.5, 3: 1.8, 5: 2.1, 9: 2.1, 1: 0.1}
    where = {7: 70, 3: 30, 5: 50, 9: 90, 1: 10}

    def measure(images: np.ndarray):
        assert images.tolist() == sorted(images.tolist())  # distinct, sorted
        return {"conv": (np.array([[exact[i]] for i in images], np.float32),
                         np.array([[where[i]] for i in images], np.int64))}

    assert candidate_images({"conv": part}, 2).tolist() == [3, 5, 7, 9]  # 2k rows
    done = recheck({"conv": part}, 2, measure)["conv"]
    assert done.partial.ids[:, 0].tolist() == [5, 9, 3, 7, 1]
    np.testing.assert_array_equal(done.partial.values[:4, 0], np.float32([2.1, 2.1, 1.8, 1.5]))
    assert done.argmax[:, 0].tolist() == [50, 90]
    assert done.partial.values[4, 0] == np.float32(0.1)  # past the candidates: as it was


def test_an_unreadable_candidate_ranks_last():
    part = _partial(np.array([[2.0], [1.0]]), np.array([[4], [6]]))

    def measure(images: np.ndarray):
        return {"conv": (np.array([[np.nan], [1.0]], np.float32), np.array([[0], [3]]))}

    done = recheck({"conv": part}, 1, measure)["conv"]
    assert done.partial.ids[:, 0].tolist() == [6, 4]
    assert done.partial.values[1, 0] == -np.inf
    assert done.argmax[:, 0].tolist() == [3]
