"""Training data held in memory after the first epoch: the same tensors, within a budget."""

from __future__ import annotations

import torch
from support import write_images

from pipeline.data.images import ImageDataset, MemoryCached, ReadableImages
from pipeline.models.preprocessing import Preprocessing


def test_later_epochs_read_the_first_epochs_tensors_up_to_the_budget(tmp_path):
    files = write_images(tmp_path, ["a", "b"], per_class=3, size=40, fmt="PNG")
    paths = [str(path.relative_to(tmp_path)) for path in files]
    prep = Preprocessing(input_size=32, resize=32, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = ReadableImages(ImageDataset(tmp_path, paths, [0] * len(paths), prep.transform()))
    item_bytes = 3 * 32 * 32 * 4
    cached = MemoryCached(images, budget=4 * item_bytes)
    first = [cached[i] for i in range(len(paths))]
    for path in files:
        path.unlink()  # the next epoch cannot decode them again
    second = [cached[i] for i in range(len(paths))]
    for i in range(4):  # held: the very tensors, equal to a fresh decode's
        assert second[i][0] is first[i][0] and torch.equal(second[i][0], first[i][0])
        assert second[i][1:] == first[i][1:]
    # beyond the budget items are read again each time: here, found missing and left out
    assert second[4] == paths[4] and second[5] == paths[5]
    assert cached.held == 4 * item_bytes
