"""The synthetic data set is deterministic, order independent and laid out as documented."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.synthetic import CLASS_NAMES, generate_synthetic_dataset, image_rng, render_image
from pipeline.errors import UserError


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_two_generations_are_byte_identical(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate_synthetic_dataset(tmp_path / name, image_size=32, train_per_class=2,
                                   val_per_class=1, seed=7)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a == b
    assert len(set(a.values())) == len(a), "every image should differ from every other"


def test_layout_counts_and_format(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path, image_size=40, train_per_class=3, val_per_class=2,
                               seed=0)
    assert len(CLASS_NAMES) >= 8
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    for split, count in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == sorted(CLASS_NAMES)
        for name in CLASS_NAMES:
            files = sorted(p.name for p in (tmp_path / split / name).iterdir())
            assert files == [f"{name}_{i:05d}.png" for i in range(count)]
    with Image.open(tmp_path / "val" / CLASS_NAMES[0] / f"{CLASS_NAMES[0]}_00001.png") as img:
        assert img.mode == "RGB" and img.size == (40, 40)


def test_images_do_not_depend_on_generation_order(tmp_path: Path) -> None:
    # Image 1 of a split is the same whether 2 or 4 images per class are generated, and
    # the same as rendering it alone.
    generate_synthetic_dataset(tmp_path / "few", image_size=32, train_per_class=2,
                               val_per_class=1, seed=5)
    generate_synthetic_dataset(tmp_path / "many", image_size=32, train_per_class=4,
                               val_per_class=3, seed=5)
    few, many = _digests(tmp_path / "few"), _digests(tmp_path / "many")
    assert few.items() <= many.items()
    name = CLASS_NAMES[3]
    alone = render_image(name, 32, image_rng(5, "train", 3, 1))
    with Image.open(tmp_path / "few" / "train" / name / f"{name}_00001.png") as img:
        assert np.array_equal(np.asarray(img), alone)


def test_seed_and_split_change_the_images(tmp_path: Path) -> None:
    name = CLASS_NAMES[0]
    base = render_image(name, 32, image_rng(1, "train", 0, 0))
    assert not np.array_equal(base, render_image(name, 32, image_rng(2, "train", 0, 0)))
    assert not np.array_equal(base, render_image(name, 32, image_rng(1, "val", 0, 0)))


def test_colour_classes_differ_in_hue() -> None:
    # red_disc and blue_disc share a shape; the mean colour of the brightest pixels tells them
    # apart, which is what forces the network to learn colour filters.
    def dominant(name: str) -> np.ndarray:
        img = render_image(name, 64, image_rng(0, "train", CLASS_NAMES.index(name), 0))
        pixels = img.reshape(-1, 3).astype(float)
        return pixels[pixels.max(1) >= np.percentile(pixels.max(1), 85)].mean(0)

    red, blue = dominant("red_disc"), dominant("blue_disc")
    assert red[0] > red[2] + 60 and blue[2] > blue[0] + 60


def test_too_small_image_size_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image_size=8"):
        generate_synthetic_dataset(tmp_path, image_size=8, train_per_class=1, val_per_class=1,
                                   seed=0)
