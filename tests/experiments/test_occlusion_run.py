"""occlusion.zarr from the package alone (no stage, no workflow): what each image's row holds,
and the refusals the stage relies on."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from pipeline.errors import UserError
from pipeline.experiments.occlusion import occlude
from pipeline.experiments.occlusion_run import (
    CLEAN_COLUMNS,
    occlude_images,
    square_grid,
    tracked_layer,
    write_occlusion_store,
)
from pipeline.interp import Projector
from pipeline.labelled import ImageCoords

SIDE = 12
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def tiny_model() -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(3, 4, 3, padding=1)), ("relu", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(4 * (SIDE // 2) ** 2, 3)),
    ]))
    return model.eval()


def test_the_tracked_layer_is_the_one_asked_for_or_the_last():
    modules = {"conv1": "features.0", "conv2": "features.3"}
    assert tracked_layer(list(modules), "", modules.__getitem__) == ("conv2", "features.3")
    assert tracked_layer(list(modules), "conv1", modules.__getitem__) == ("conv1", "features.0")
    with pytest.raises(UserError, match="'conv9' is not an analysed layer; use one of conv1"):
        tracked_layer(list(modules), "conv9", modules.__getitem__)
    with pytest.raises(UserError, match="records no layer"):
        tracked_layer([], "", modules.__getitem__)


def test_a_square_larger_than_the_input_is_refused_naming_the_option():
    with pytest.raises(UserError, match=r"\[occlusion\] size \(13\) is larger than the model's 12"):
        square_grid(SIDE, 13, 0)
    grid = square_grid(SIDE, 0, 0)
    assert (grid.size, grid.stride, grid.image_hw) == (3, 1, (SIDE, SIDE))


def test_each_row_is_that_images_occlusion_and_the_store_reads_back(tmp_path):
    model = tiny_model()
    generator = torch.Generator().manual_seed(5)
    images = {7: (torch.randn(3, SIDE, SIDE, generator=generator), 2),
              9: (torch.randn(3, SIDE, SIDE, generator=generator), 0)}
    grid = square_grid(SIDE, 4, 4)
    positions = []
    arrays = occlude_images(model, images, [9, 7], "conv", grid, 5, MEAN, STD, positions.append)

    assert sum(positions) == 2 * 3 * 3
    for row, image_id in enumerate([9, 7]):
        image, label = images[image_id]
        expected = occlude(model, image, label, "conv", grid, 5,
                           Projector(model, method="deconvnet", batch_size=1))
        assert arrays["image_id"][row] == image_id and arrays["label"][row] == label
        assert arrays["tracked_unit"][row] == expected.unit
        assert tuple(arrays["position"][row]) == expected.position
        # the stage occludes incrementally, this full forward: equal within float32 rounding
        np.testing.assert_allclose(arrays["total"][row], expected.total, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(arrays["predicted"][row], expected.predicted)
        assert arrays["clean"][row][CLEAN_COLUMNS.index("predicted")] == expected.clean_predicted
        pixels = image.numpy() * np.asarray(STD)[:, None, None] + np.asarray(MEAN)[:, None, None]
        np.testing.assert_allclose(arrays["images"][row].transpose(2, 0, 1),
                                   np.rint(np.clip(pixels, 0, 1) * 255), atol=1)
        scale = arrays["projection_scale"][row]
        assert scale == pytest.approx(float(np.abs(expected.projection).max()))
        assert float(np.abs(arrays["projection"][row].astype(np.float32)).max()) == 1.0
        top, left, bottom, right = arrays["box"][row]
        assert 0 <= top < bottom <= SIDE and 0 <= left < right <= SIDE

    labels = [int(images[i][1]) for i in (9, 7)]
    coords = ImageCoords(np.array([9, 7]), np.array(["a/9.png", "b/7.png"]),
                         np.array(labels, np.int32), np.array(["a", "b"]))
    write_occlusion_store(tmp_path / "occlusion.zarr", arrays, "conv1", "conv", grid, coords,
                          "cpu")
    store = zarr.open_group(tmp_path / "occlusion.zarr", mode="r")
    assert store.attrs["grid"] == [3, 3] and store.attrs["layer"] == "conv1"
    assert list(store["measure"][...]) == list(CLEAN_COLUMNS)
    assert list(store["path"][...]) == ["a/9.png", "b/7.png"]
    for name, values in arrays.items():
        stored = "image" if name == "image_id" else name  # the ids are the image coordinate
        np.testing.assert_array_equal(store[stored][...], values)
        assert store[stored].metadata.dimension_names[0] == "image"
