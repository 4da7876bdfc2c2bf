"""The deconv stage's pass over its distinct top images: each requested map is the module's
output for the image (its last call), the thumbnails are the atlas's, an unreadable image stays
blank, the pass stops once the analysed modules ran, and a finished pass is reused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.interp.image_pass import ImagePass, thumbnails
from pipeline.interp.maps import feature_maps
from pipeline.interp.projection_store import LayerPlan
from pipeline.interp.receptive_field import ReceptiveField

FIELD = ReceptiveField(size=(3, 3), jump=(1, 1), first=(-1, -1))  # unused by the pass


class Reused(nn.Module):
    """``act`` runs twice per pass: its second call (after conv2) is the one recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class Decoded:
    """The part of :class:`pipeline.data.decoded.DecodedImages` the pass reads."""

    channels = 3

    def __init__(self, pixels: np.ndarray, unreadable: set[int]) -> None:
        self.pixels, self.unreadable = pixels, unreadable

    def read(self, image_ids: np.ndarray) -> np.ndarray:
        return np.stack([self.pixels[i] * (int(i) not in self.unreadable) for i in image_ids])

    def readable(self, image_ids: np.ndarray) -> np.ndarray:
        return np.array([int(i) not in self.unreadable for i in image_ids], dtype=bool)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 255 - 0.5


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = Reused().eval()
    pixels = np.random.default_rng(1).integers(0, 256, (6, 3, 16, 16), dtype=np.uint8)
    layers = [LayerPlan("conv1", "conv1", 4, (16, 16), FIELD),
              LayerPlan("conv2", "act", 5, (8, 8), FIELD)]
    topk = pd.DataFrame({"layer": ["conv1"] * 4 + ["conv2"] * 3,
                         "unit": [0, 0, 3, 2, 4, 1, 1],
                         "rank": [0, 1, 0, 0, 0, 0, 1],
                         "image_id": [5, 2, 2, 4, 0, 5, 3]})
    return model, Decoded(pixels, unreadable={4}), layers, topk


def test_maps_are_the_modules_output_and_thumbnails_the_atlas(setup, tmp_path):
    model, decoded, layers, topk = setup
    ran = []
    model.head.register_forward_hook(lambda *_: ran.append(1))
    made = ImagePass.build(tmp_path / "pass", model, layers, topk, 2, decoded, normalise,
                           batch_size=2)
    assert not made.reused and not ran  # every pass stopped once conv1 and act had run
    for layer in layers:
        maps = made.maps(layer.label, 0, layer.channels)
        assert maps.shape == (layer.channels, 2, *layer.map_hw) and maps.dtype == np.float32
        rows = topk[topk["layer"] == layer.label]
        for row in rows.itertuples(index=False):
            image = normalise(torch.from_numpy(decoded.pixels[row.image_id][None]))
            expected = feature_maps(model, image, layer.module)[0, row.unit].numpy()
            if row.image_id in decoded.unreadable:
                expected = np.zeros_like(expected)
            np.testing.assert_allclose(maps[row.unit, row.rank], expected, rtol=1e-6,
                                       atol=1e-7)
        requested = np.zeros(maps.shape[:2], bool)
        requested[rows["unit"], rows["rank"]] = True
        assert not maps[~requested].any()  # a rank no image fills reads zero
    assert made.ids.tolist() == [0, 2, 3, 5]  # 4 cannot be read: it has no thumbnail
    np.testing.assert_array_equal(
        made.thumbs(np.array([5, 2, 5])),
        thumbnails(torch.from_numpy(decoded.pixels[[5, 2, 5]])))
    with pytest.raises(KeyError, match=r"\[4\]"):
        made.thumbs(np.array([4]))
    np.testing.assert_array_equal(made.maps("conv2", 1, 3), made.maps("conv2", 0, 5)[1:3])


def test_a_finished_pass_is_reused_and_other_rows_redo_it(setup, tmp_path):
    model, decoded, layers, topk = setup
    first = ImagePass.build(tmp_path / "pass", model, layers, topk, 2, decoded, normalise, 4)
    again = ImagePass.build(tmp_path / "pass", model, layers, topk, 2, decoded, normalise, 4)
    assert again.reused
    np.testing.assert_array_equal(again.maps("conv1", 0, 4), first.maps("conv1", 0, 4))
    other = topk.assign(image_id=topk["image_id"].replace(5, 1))
    assert not ImagePass.build(tmp_path / "pass", model, layers, other, 2, decoded, normalise,
                               4).reused
    # a pass cut off before its index was written is never read: it is made again
    (tmp_path / "pass" / "index.json").unlink()
    assert not ImagePass.build(tmp_path / "pass", model, layers, other, 2, decoded, normalise,
                               4).reused


def test_an_untraceable_model_runs_whole_and_keeps_each_modules_last_call(setup, tmp_path,
                                                                          monkeypatch):
    model, decoded, layers, topk = setup
    traced = ImagePass.build(tmp_path / "traced", model, layers, topk, 2, decoded, normalise, 3)
    monkeypatch.setattr("pipeline.interp.image_pass.module_call_counts", lambda model: None)
    ran = []
    model.head.register_forward_hook(lambda *_: ran.append(1))
    whole = ImagePass.build(tmp_path / "whole", model, layers, topk, 2, decoded, normalise, 3)
    assert ran  # no call counts: no early stop
    for layer in layers:
        np.testing.assert_array_equal(whole.maps(layer.label, 0, layer.channels),
                                      traced.maps(layer.label, 0, layer.channels))
