"""Input dependence on hand-built projections whose answer is known, read from a real store."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.sanity.inputs import layer_dependence, unit_dependence
from pipeline.sanity.similarity import local_contrast

WHOLE = (slice(0, 9), slice(0, 9))


def _patches(k: int = 3, seed: int = 0) -> np.ndarray:
    """``k`` 9 x 9 RGB patches, each with a vertical and a horizontal edge of its own."""
    rng = np.random.default_rng(seed)
    patches = np.full((k, 9, 9, 3), 40, np.uint8)
    for i in range(k):
        patches[i, :, rng.integers(2, 7):] += 100
        patches[i, rng.integers(2, 7):, :] += 60
    return patches


def test_projections_that_are_their_patches_edges_follow_the_image():
    patches = _patches()
    projections = np.stack([local_contrast(p)[..., None] * [1.0, -1.0, 0.5] for p in patches])
    between, with_patches = unit_dependence(projections, patches, [WHOLE] * 3)
    assert with_patches == pytest.approx(1.0)
    assert between < 0.9  # each image has its edges elsewhere


def test_one_picture_in_every_image_does_not_follow_the_image():
    patches = _patches()
    picture = np.random.default_rng(1).normal(size=(9, 9, 3))
    projections = np.stack([picture * scale for scale in (1.0, 0.5, 2.0)])
    between, with_patches = unit_dependence(projections, patches, [WHOLE] * 3)
    assert between == pytest.approx(1.0)
    assert abs(with_patches) < 0.5


def test_pixels_outside_the_image_and_empty_projections_are_left_out():
    patches = _patches(2)
    picture = np.random.default_rng(2).normal(size=(9, 9, 3))
    projections = np.stack([picture, picture.copy()])
    projections[1, :4] = 99.0  # outside the image for rank 1: must not count
    regions = [WHOLE, (slice(4, 9), slice(0, 9))]
    assert unit_dependence(projections, patches, regions)[0] == pytest.approx(1.0)
    empty = np.zeros_like(projections)
    assert all(np.isnan(v) for v in unit_dependence(empty, patches, regions))


def test_layer_figures_from_a_projection_store_on_disk(tmp_path):
    """A layer group as projections.zarr holds it: unit 0 shows its patches' edges, unit 1
    one picture everywhere, unit 2 is dead (no image)."""
    k, methods = 3, ("deconvnet", "gradient")
    patches = np.stack([_patches(k, 0), _patches(k, 1), np.full((k, 9, 9, 3), 128, np.uint8)])
    picture = np.random.default_rng(3).normal(size=(9, 9, 3))
    edges = np.stack([local_contrast(p)[..., None].repeat(3, -1) for p in patches[0]])
    per_unit = np.stack([edges, np.stack([picture] * k), np.zeros((k, 9, 9, 3))])
    peak = np.abs(per_unit).max(axis=(2, 3, 4), keepdims=True)
    per_unit = np.divide(per_unit, peak, out=np.zeros_like(per_unit), where=peak > 0)
    projections = np.stack([per_unit, per_unit]).astype(np.float16)  # as stored: [-1, 1]
    group = zarr.open_group(tmp_path / "projections.zarr", mode="w").create_group("conv1")
    ids = np.array([[0, 1, 2], [3, 4, 5], [-1, -1, -1]])
    boxes = np.where(ids[..., None] >= 0, np.array([0, 0, 9, 9]), -1)
    for name, values in (("method", np.array(methods)), ("image_id", ids),
                         ("boxes", boxes.astype(np.int32)), ("patches", patches),
                         ("projections", projections)):
        array = group.create_array(name, shape=values.shape,
                                   dtype=str if values.dtype.kind == "U" else values.dtype)
        array[...] = values
    rows = layer_dependence(group, methods[::-1], [2, 1, 0], images=k, image_size=9)
    assert [row["method"] for row in rows] == ["gradient", "deconvnet"]
    stored = projections[0].astype(np.float32)
    units = [unit_dependence(stored[u], patches[u], [WHOLE] * k) for u in (0, 1)]
    assert units[0][1] == pytest.approx(1.0, abs=1e-3) and units[1][0] == pytest.approx(1.0)
    for row in rows:
        assert row["n"] == 2  # the dead unit has no image
        assert row["between_projections"] == pytest.approx(np.mean([u[0] for u in units]))
        assert row["with_patches"] == pytest.approx(np.mean([u[1] for u in units]))
        assert row["with_patches_std"] == pytest.approx(np.std([u[1] for u in units]))
