"""The deconv stage's pass over its distinct top images: each requested map is the module's
output for the image (its last call), the thumbnails are the atlas's, an unreadable image stays
blank, the pass stops once the analysed modules ran, and a finished pass is reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from small_models import top_image_pass

from pipeline.interp.image_pass import ImagePass, thumbnails
from pipeline.interp.maps import feature_maps


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 255 - 0.5


@pytest.fixture()
def setup():
    return top_image_pass(unreadable={4})


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
