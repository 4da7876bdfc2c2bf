"""The rank stage's result does not depend on how the store or the dask graph is chunked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.inference.store import LayerMeta, create_store, write_chunk
from pipeline.labelled import ImageCoords
from pipeline.ranking import rank_store
from pipeline.ranking.histogram import N_BINS, bin_edges, block_histogram, quantiles

N_IMAGES, CHANNELS, K = 1000, 12, 9


def activations(seed: int = 0) -> np.ndarray:
    """Per-image maxima with the hard cases: ties (coarse values), dead units, unreadable rows."""
    rng = np.random.default_rng(seed)
    values = np.maximum(rng.normal(size=(N_IMAGES, CHANNELS)), 0).astype(np.float32)
    values[:, 0] = np.round(values[:, 0])  # many exact ties at 1.0, 2.0, 3.0
    values[:, 1] = 0.0  # dead: never fires
    values[:, 2] = np.where(rng.random(N_IMAGES) < 0.01, 5.0, 0.0)  # fires in ~10 images, all tied
    values[:, 3] = 2.5  # every image tied
    values[rng.choice(N_IMAGES, 17, replace=False)] = np.nan  # unreadable images
    values[[5, 600], 6] = np.nan  # stray NaN cells: "did not fire" there, the images still count
    return values


def write_store(path: Path, values: np.ndarray, chunk_size: int) -> Path:
    meta = [LayerMeta("conv1", "features.1", CHANNELS, height=4, width=4,
                      receptive_field=(3, 3))]
    labels = (np.arange(len(values)) % 7).astype(np.int32)
    store = create_store(path, ImageCoords.numbered(len(values), labels), chunk_size, meta,
                         top=1)
    for start in range(0, len(values), chunk_size):
        part = slice(start, start + chunk_size)
        argmax = np.broadcast_to(np.arange(start, min(start + chunk_size, len(values)))[:, None]
                                 % 16, values[part].shape).astype(np.int32)
        write_chunk(store, start, {"conv1/max": values[part], "conv1/argmax": argmax})
    return path


def brute_force_topk(values: np.ndarray, k: int) -> pd.DataFrame:
    """Sort all images of each unit by (value descending, id ascending); keep positive ones."""
    rows = []
    for unit in range(values.shape[1]):
        column = np.nan_to_num(values[:, unit], nan=-np.inf)
        order = sorted(range(len(column)), key=lambda i: (-column[i], i))[:k]
        rows += [(unit, rank, i, column[i]) for rank, i in enumerate(order) if column[i] > 0]
    return pd.DataFrame(rows, columns=["unit", "rank", "image_id", "value"])


@pytest.fixture(scope="module")
def values() -> np.ndarray:
    return activations()


@pytest.fixture(scope="module")
def reference(values, tmp_path_factory) -> object:
    return rank_store(write_store(tmp_path_factory.mktemp("ref") / "a.zarr", values, 100), K)


@pytest.mark.parametrize(("chunk_size", "rows"), [
    pytest.param(1, 7, marks=pytest.mark.slow),  # a chunk per image: thousands of dask tasks
    (37, 37), (64, 192), (1000, 1000), (100, None), (250, 750)])
def test_topk_and_statistics_are_independent_of_chunking(values, reference, tmp_path,
                                                         chunk_size, rows):
    tables = rank_store(write_store(tmp_path / "a.zarr", values, chunk_size), K, rows=rows)
    pd.testing.assert_frame_equal(tables.topk, reference.topk)
    pd.testing.assert_frame_equal(tables.selectivity, reference.selectivity)
    pd.testing.assert_frame_equal(tables.histograms, reference.histograms)
    # Sums are added in another order, so the mean and std may differ in the last bits only.
    pd.testing.assert_frame_equal(tables.units, reference.units, check_exact=False, rtol=1e-6)


def test_topk_equals_a_brute_force_sort_with_ties_to_the_lower_id(values, reference):
    expected = brute_force_topk(values, K)
    got = reference.topk[["unit", "rank", "image_id", "value"]]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    units = reference.units.set_index("unit")
    assert list(units.index[units["dead"]]) == [1]
    assert units.loc[1, "n_top"] == 0 and units.loc[1, "top_class"] == -1
    assert np.isnan(units.loc[1, "class_entropy"])  # undefined, not "perfectly selective"
    assert units.loc[3, "n_top"] == K  # all tied: the K lowest readable ids
    assert (reference.topk.query("unit == 3")["image_id"] == np.sort(
        np.flatnonzero(~np.isnan(values[:, 3])))[:K]).all()


def test_statistics_and_selectivity(values, reference):
    units = reference.units.set_index("unit")
    readable = np.nan_to_num(values[~np.isnan(values).all(axis=1)], nan=0.0)
    np.testing.assert_allclose(units["peak"], readable.max(axis=0), rtol=0)
    np.testing.assert_allclose(units["mean_max"], readable.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(units["std_max"], readable.std(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(units["frac_active"], (readable > 0).mean(axis=0), rtol=1e-6)
    # Unit 3 fires in every image, all tied: its top-100 are the 100 lowest readable ids.
    ids = np.flatnonzero(~np.isnan(values[:, 3]))[:100]
    assert units.loc[6, "frac_active"] > 0 and np.isfinite(units.loc[6, "mean_max"])
    expected = np.bincount(ids % 7, minlength=7)
    got = reference.selectivity.query("unit == 3").set_index("class")["count"]
    assert got.to_dict() == {c: n for c, n in enumerate(expected) if n}
    p = expected[expected > 0] / 100
    assert units.loc[3, "class_entropy"] == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-5)
    assert units.loc[3, "top_class_share"] == pytest.approx(expected.max() / 100)
    assert units.loc[3, "n_selectivity"] == 100
    assert units.loc[2, "n_selectivity"] == int((values[:, 2] > 0).sum())


def test_histogram_quantiles_are_within_one_bin():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.lognormal(0, 2, size=(20000, 3)).astype(np.float32),
                             -rng.lognormal(0, 1, size=(500, 3)).astype(np.float32),
                             np.zeros((3000, 3), np.float32)])
    counts = block_histogram(values)
    assert counts.shape == (3, N_BINS) and counts.sum() == values.size
    edges = bin_edges()
    assert np.all(np.diff(edges) > 0)
    for level, got in zip((0.1, 0.5, 0.9, 0.99, 0.999), quantiles(counts, (0.1, 0.5, 0.9, 0.99,
                                                                          0.999)), strict=True):
        exact = np.quantile(values, level, axis=0)
        np.testing.assert_allclose(got, exact, rtol=1 / 32, atol=1e-6)
