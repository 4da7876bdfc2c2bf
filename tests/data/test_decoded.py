"""Top images decoded once into raw crops: the crops normalised are the network's exact input,
an unreadable file is recorded (not fatal), and a finished decode is reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support import write_images

from pipeline.data.decoded import DecodedImages
from pipeline.data.images import ImageDataset, scan_image_folder
from pipeline.models.preprocessing import Preprocessing

PREP = Preprocessing(input_size=40, resize=46, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "data"
    files = write_images(root, ["a", "b"], per_class=6, size=57, seed=4)
    Image.fromarray(np.full((30, 70), 90, np.uint8), mode="L").save(files[1])  # greyscale
    Image.new("CMYK", (64, 50), (10, 200, 30, 5)).save(files[2], format="JPEG")
    files[4].write_bytes(files[4].read_bytes()[:200])  # truncated
    manifest, _ = scan_image_folder(root)
    return root, manifest


def _dataset(root, manifest, transform):
    return ImageDataset(root, manifest["path"].tolist(), manifest["label"].tolist(), transform)


@pytest.mark.parametrize("workers", [0, 2])
def test_decoded_crops_normalise_to_the_exact_network_input(folder, tmp_path, workers):
    root, manifest = folder
    ids = np.array([7, 1, 2, 4, 7, 0, 11])  # unsorted, repeated: decoded once each
    seen = []
    decoded = DecodedImages.build(tmp_path / "decoded", ids, _dataset(root, manifest,
                                                                      PREP.pixels()),
                                  PREP.input_size, num_workers=workers, advance=seen.append)
    assert decoded.ids.tolist() == [0, 1, 2, 4, 7, 11] and sum(seen) == 6
    assert (tmp_path / "decoded" / "pixels.u8").stat().st_size == 6 * 3 * 40 * 40
    assert set(decoded.reasons) == {4} and "Truncated" in decoded.reasons[4]
    asked = np.array([11, 2, 0, 1, 7])
    crops = decoded.read(asked)
    assert crops.dtype == np.uint8 and crops.shape == (5, 3, 40, 40)
    network = _dataset(root, manifest, PREP.transform())
    batch = PREP.normalise()(torch.from_numpy(crops))
    for j, image_id in enumerate(asked):
        assert torch.equal(batch[j], network[int(image_id)][0])  # bitwise: one definition
    assert decoded.readable(np.array([4, 7])).tolist() == [False, True]
    assert not decoded.read(np.array([4])).any()  # zeros stand in for the unreadable one
    with pytest.raises(KeyError, match=r"\[3\]"):
        decoded.read(np.array([3]))


def test_a_finished_decode_is_reused_and_other_ids_rebuild(folder, tmp_path):
    root, manifest = folder
    dataset = _dataset(root, manifest, PREP.pixels())
    first = DecodedImages.build(tmp_path / "d", np.array([0, 5, 9]), dataset, PREP.input_size)
    assert not first.reused
    stamp = (tmp_path / "d" / "pixels.u8").stat().st_mtime_ns
    again = DecodedImages.build(tmp_path / "d", np.array([9, 0, 5]), dataset, PREP.input_size)
    assert again.reused and (tmp_path / "d" / "pixels.u8").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.read(np.array([5])), first.read(np.array([5])))
    other = DecodedImages.build(tmp_path / "d", np.array([0, 6]), dataset, PREP.input_size)
    assert not other.reused and other.ids.tolist() == [0, 6]
    # a decode cut off before its index was written is never read: it is done again
    (tmp_path / "d" / "index.json").unlink()
    assert not DecodedImages.build(tmp_path / "d", np.array([0, 6]), dataset,
                                   PREP.input_size).reused


def test_auto_workers_follow_the_cores_and_the_images(monkeypatch):
    import multiprocessing
    import os

    from pipeline.data.decoded import AUTO, BATCH, MAX_AUTO_WORKERS, decoding_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert decoding_workers(3, 10_000) == 3 and decoding_workers(0, 10_000) == 0  # as asked
    assert decoding_workers(AUTO, 10_000) == MAX_AUTO_WORKERS
    assert decoding_workers(AUTO, 3 * BATCH) == 3  # one per batch of images
    assert decoding_workers(AUTO, BATCH) == 0  # one worker decodes no faster than the stage
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert decoding_workers(AUTO, 10_000) == 2
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    assert decoding_workers(AUTO, 10_000) == 0  # a daemon may start no process
