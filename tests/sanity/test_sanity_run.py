"""Trained against randomised projections of the same activations, on a tiny real network."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import pictures, pixels, plans, tiny_net, top_table
from torch import nn

from pipeline.errors import UserError
from pipeline.sanity.randomise import keep_weights
from pipeline.sanity.sanity_run import SanityPlan, run_cascade

METHODS = ("deconvnet", "guided", "gradient")


@pytest.fixture(scope="module")
def network():
    model = tiny_net()
    images = pixels(8)
    return model, images, top_table(model, images, k=3)


def test_weights_randomised_to_themselves_give_similarity_exactly_1(network):
    model, images, topk = network
    result = run_cascade(model, plans(model), topk, SanityPlan(METHODS, 8, 3, 0),
                         pictures(images), randomise=keep_weights, every_step=True)
    table = result.table
    assert len(table) == 2 * 3 * 2  # layers x methods x steps
    assert np.allclose(table["spearman_mean"], 1.0, atol=1e-9)
    assert np.allclose(table["ssim_mean"], 1.0, atol=1e-9)
    assert (table["n"] > 0).all() and (table["empty"] == 0).all()
    # the top-1 of every live unit, the same crop as projections.zarr's
    stored = result.randomised["conv1"]
    assert stored["projections"].shape == (3, 8, 5, 5, 3)
    live = sorted(topk[(topk["layer"] == "conv1") & (topk["rank"] == 0)]["unit"])
    assert sorted(np.flatnonzero(stored["image_id"] >= 0)) == live
    assert (stored["projection_scale"][:, live] > 0).all()


def test_a_first_layer_unit_under_new_weights_is_unlike_its_trained_filter():
    """A first-layer deconvnet projection is its filter (times its activation): under fresh
    random weights it shares nothing with the trained one. 24 units x 2 images, seeded."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 24, 7, padding=3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(24 * 24 * 24, 2)).eval()
    images = pixels(6, seed=2)
    first = (("conv1", "1"),)
    topk, plan = top_table(model, images, k=2, layers=first), plans(model, first)
    result = run_cascade(model, plan, topk, SanityPlan(("deconvnet",), 24, 2, seed=0),
                         pictures(images))
    full = result.table[result.table["full"]].iloc[0]
    assert full["n"] == len(topk[topk["rank"] < 2]) and full["empty"] == 0
    assert abs(full["spearman_mean"]) < 0.12 and abs(full["ssim_mean"]) < 0.12


def test_randomising_only_modules_above_a_layer_leaves_its_projections_as_they_were(network):
    """Step 1 randomises conv2 and the classifier: conv1's projections, projected anyway
    (every_step), are those of the trained network; conv2's are not."""
    model, images, topk = network
    result = run_cascade(model, plans(model), topk, SanityPlan(METHODS, 8, 3, 0),
                         pictures(images), every_step=True)
    table = result.table.set_index(["layer", "method", "step"])
    for method in METHODS:
        above = table.loc[("conv1", method, 1)]
        assert above["spearman_mean"] == pytest.approx(1.0, abs=1e-9)
        assert above["ssim_mean"] == pytest.approx(1.0, abs=1e-9)
        assert table.loc[("conv2", "deconvnet", 1)]["spearman_mean"] < 0.99
    skipped = run_cascade(model, plans(model), topk, SanityPlan(METHODS, 8, 3, 0),
                          pictures(images)).table
    pd.testing.assert_frame_equal(skipped, result.table, check_exact=False, atol=1e-9)


def test_a_model_the_projector_refuses_is_refused_in_one_line(network):
    _, images, _ = network
    model = tiny_net(activation=nn.SiLU)
    topk = top_table(model, images)
    with pytest.raises(UserError) as caught:
        run_cascade(model, plans(model), topk, SanityPlan(("deconvnet",), 4, 1, 0),
                    pictures(images))
    assert "\n" not in str(caught.value) and "deconvnet" in str(caught.value)


def test_an_image_several_layers_project_is_decoded_once_and_let_go_after_the_last():
    from pipeline.sanity.sanity_run import Pictures, _Decoded

    decoded: list[int] = []

    def pixels(i: int) -> torch.Tensor:
        decoded.append(i)
        return torch.full((3, 4, 4), i, dtype=torch.uint8)

    layers = [pd.Series([5, 7, 5]), pd.Series([7, 9]), pd.Series([5])]
    images = _Decoded(Pictures(pixels, lambda x: x.float(), 4), layers)
    found = [images.images(ids) for ids in layers]
    assert sorted(decoded) == [5, 7, 9]  # each once
    assert [sorted(f) for f in found] == [[5, 7], [7, 9], [5]]
    assert int(found[2][5][0, 0, 0]) == 5
    assert images.kept == {}  # nothing held once the last layer has its images
