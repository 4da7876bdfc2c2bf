"""Requests on identical images are found in two waits for the device (pipeline.interp.sharing)."""

import torch

from pipeline.interp.sharing import _compared, identical, share


def test_equal_images_share_a_group_in_order_of_first_appearance():
    a, b, c = (torch.rand(3, 8, 8) for _ in range(3))
    images = torch.stack([b, a, b, c, a, b])
    assert identical(images) == ([0, 1, 0, 2, 1, 0], [0, 1, 3])
    base, inverse, rounds = share(torch.stack([b, a, b, b, a, b]))  # 2 forwards + 4 backwards
    assert torch.equal(base, torch.stack([b, a]))
    assert inverse.tolist() == [0, 1, 0, 0, 1, 0] and rounds.tolist() == [0, 0, 1, 2, 1, 3]


def test_images_that_differ_in_one_value_are_apart():
    a = torch.rand(3, 8, 8)
    b = a.clone()
    b[2, 7, 7] += 1e-6
    assert identical(torch.stack([a, b, a])) == ([0, 1, 0], [0, 1])


def test_colliding_fingerprints_are_told_apart_one_by_one():
    """Two different images under one fingerprint: the exact comparison decides."""
    a, b = torch.zeros(4), torch.ones(4)
    flat = torch.stack([a, b, a, b])
    assert _compared(flat, [0.0, 0.0, 0.0, 0.0]) == ([0, 1, 0, 1], [0, 1])


def test_an_image_with_nan_is_its_own_group():
    a = torch.rand(3, 4, 4)
    a[0, 0, 0] = float("nan")
    assert identical(torch.stack([a, a.clone()])) == ([0, 1], [0, 1])
