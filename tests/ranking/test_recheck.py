"""A bfloat16 store's candidates re-ordered by float32 values (pipeline.ranking.recheck)."""

import numpy as np

from pipeline.ranking.partials import Partial
from pipeline.ranking.recheck import MARGIN, candidate_images, candidate_rows, recheck


def _partial(values: np.ndarray, ids: np.ndarray) -> Partial:
    channels = values.shape[1]
    return Partial(values.astype(np.float32), ids.astype(np.int64), 100, np.zeros(channels),
                   np.zeros(channels), np.zeros(channels, np.int64), np.zeros((channels, 4),
                                                                              np.int32))


def _measure(label: str, exact: dict[int, float], where: dict[int, int]):
    """What the float32 forward pass gives: each image's maximum and position in one unit."""
    def measure(images: np.ndarray):
        assert images.tolist() == sorted(set(images.tolist()))  # distinct, sorted
        return {label: (np.array([[exact[i]] for i in images], np.float32),
                        np.array([[where.get(i, 0)] for i in images], np.int64))}
    return measure


def test_candidates_are_the_top_k_and_all_within_the_margin_of_the_kth():
    k = 2
    near = 1.0 - MARGIN / 2  # within the margin of the k-th value (1.0)
    values = np.array([[3.0, 5.0, 0.0], [1.0, 4.0, 0.0], [near, 0.5, 0.0],
                       [near, -np.inf, 0.0], [0.2, -np.inf, 0.0], [0.1, -np.inf, 0.0]])
    # unit 0: its top 2 and the two near 1.0; unit 1: its top 2 only; unit 2 never fires
    assert candidate_rows(values, k).tolist() == [4, 2, 0]
    values[4, 0] = near
    assert candidate_rows(values, k).tolist() == [5, 2, 0]
    values[0, 2] = 0.3  # fired once: its one positive row, not every zero tied at the k-th
    assert candidate_rows(values, k).tolist() == [5, 2, 1]


def test_recheck_orders_candidates_by_float32_with_ties_to_the_lower_image():
    # bfloat16 says image 7 > 3 > 5 > 9 for the unit; float32 says 5 and 9 tie at the top
    part = _partial(np.array([[2.0], [1.9], [1.89], [1.88], [0.1]]),
                    np.array([[7], [3], [5], [9], [1]]))
    measure = _measure("conv", {7: 1.5, 3: 1.8, 5: 2.1, 9: 2.1}, {7: 70, 3: 30, 5: 50, 9: 90})
    assert candidate_images({"conv": part}, 2).tolist() == [3, 5, 7, 9]
    done = recheck({"conv": part}, 2, measure)["conv"]
    assert done.partial.ids[:, 0].tolist() == [5, 9, 3, 7, 1]
    np.testing.assert_array_equal(done.partial.values[:4, 0], np.float32([2.1, 2.1, 1.8, 1.5]))
    assert done.argmax[:, 0].tolist() == [50, 90]
    assert done.partial.values[4, 0] == np.float32(0.1)  # past the candidates: as it was
    assert done.uncertain == 0  # image 1 (0.1 in bfloat16) cannot reach 2.1


def test_a_unit_the_margin_cannot_vouch_for_is_counted():
    """The float32 k-th value fell below what the first image left out had in bfloat16."""
    part = _partial(np.array([[2.0], [1.0], [0.9]]), np.array([[4], [6], [8]]))
    done = recheck({"conv": part}, 2, _measure("conv", {4: 2.0, 6: 0.8}, {}))["conv"]
    assert done.partial.ids[:2, 0].tolist() == [4, 6] and done.uncertain == 1


def test_an_unreadable_candidate_ranks_last():
    part = _partial(np.array([[2.0], [1.99], [0.5]]), np.array([[4], [6], [2]]))
    done = recheck({"conv": part}, 1, _measure("conv", {4: np.nan, 6: 1.0}, {6: 3}))["conv"]
    assert done.partial.ids[:, 0].tolist() == [6, 4, 2]
    assert done.partial.values[1, 0] == -np.inf
    assert done.argmax[:, 0].tolist() == [3]
