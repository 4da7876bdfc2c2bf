"""Training data held in memory after the first epoch: the same tensors, when all fit."""

from __future__ import annotations

import torch
from support import write_images

from pipeline.data.images import ImageDataset, MemoryCached, ReadableImages
from pipeline.models.preprocessing import Preprocessing

ITEM = 3 * 32 * 32 * 4  # bytes of one 32 px RGB float tensor


def _images(tmp_path):
    files = write_images(tmp_path, ["a", "b"], per_class=3, size=40, fmt="PNG")
    paths = [str(path.relative_to(tmp_path)) for path in files]
    prep = Preprocessing(input_size=32, resize=32, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return files, paths, ReadableImages(ImageDataset(tmp_path, paths, [0] * len(paths),
                                                     prep.transform()))


def test_later_epochs_read_the_first_epochs_tensors(tmp_path):
    files, paths, images = _images(tmp_path)
    files[5].unlink()  # unreadable in the first epoch ...
    cached = MemoryCached(images, budget=6 * ITEM)
    first = [cached[i] for i in range(len(paths))]
    assert first[5] == paths[5]
    for path in files[:5]:
        path.unlink()  # the next epoch cannot decode them again
    files[5].write_bytes(b"not an image either")  # ... and tried again in the next
    second = [cached[i] for i in range(len(paths))]
    for i in range(5):  # held: the very tensors, equal to a fresh decode's
        assert second[i][0] is first[i][0] and torch.equal(second[i][0], first[i][0])
        assert second[i][1:] == first[i][1:]
    assert second[5] == paths[5] and 5 not in cached.cache


def test_a_set_larger_than_the_budget_is_not_held_at_all(tmp_path):
    files, paths, images = _images(tmp_path)
    cached = MemoryCached(images, budget=5 * ITEM)  # six images: they do not all fit
    first = [cached[i] for i in range(len(paths))]
    assert cached.cache == {} and cached.keep is False
    files[0].unlink()
    assert cached[0] == paths[0] and isinstance(first[0], tuple)  # read again, now missing
