"""The official flat ImageNet val layout is read with labels from a (fake, tiny) devkit."""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from pipeline.data.imagenet import scan_imagenet_val
from pipeline.errors import UserError

DEVKIT = "ILSVRC2012_devkit_t12"
FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
          "wordnet_height", "num_train_images")
# ILSVRC2012_ID -> wnid of the leaf classes; 4 is a non-leaf synset that must be ignored.
LEAVES = {1: "n01440764", 2: "n01443537", 3: "n01484850"}
GROUND_TRUTH = [3, 1, 2, 2, 1, 3]  # line i is image ILSVRC2012_val_0000000i
EXPECTED = [LEAVES[i] for i in GROUND_TRUTH]


def val_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def write_images(folder: Path, numbers: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        Image.new("RGB", (4, 4), (number * 40, 0, 0)).save(folder / val_name(number))


def write_devkit(parent: Path, ground_truth: list[int] = GROUND_TRUTH) -> Path:
    """An extracted devkit whose meta.mat has the struct array torchvision's parser reads."""
    data = parent / DEVKIT / "data"
    data.mkdir(parents=True)
    rows = [(i, wnid, f"{wnid} words, more", "gloss", 0, np.zeros(0), 0, 1300)
            for i, wnid in LEAVES.items()]
    rows.insert(1, (4, "n00001740", "entity", "root", 2, np.array([1.0, 2.0]), 3, 0))
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in FIELDS])
    for k, row in enumerate(rows):
        synsets[k, 0] = tuple(np.float64(v) if isinstance(v, int) else v for v in row)
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{i}\n" for i in ground_truth))
    return parent / DEVKIT


def write_devkit_archive(parent: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_devkit(Path(tmp))
        archive = parent / f"{DEVKIT}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname=DEVKIT)
    return archive


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_flat_folder_with_extracted_devkit(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    write_images(root, [6, 2, 1, 3, 5, 4])
    (root / "notes.txt").write_text("not an image")
    devkit = write_devkit(tmp_path / "kits")
    frame = scan_imagenet_val(root, devkit)
    assert list(frame.columns) == ["path", "wnid"]
    assert frame["path"].tolist() == [val_name(i) for i in range(1, 7)]
    assert frame["wnid"].tolist() == EXPECTED
    assert "n00001740" not in set(frame["wnid"])


def test_val_subfolder_with_archive_in_parent_leaves_root_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imagenet"
    write_images(root / "val", list(range(1, 7)))
    write_devkit_archive(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = tree(tmp_path)
    frame = scan_imagenet_val(root)
    assert frame["path"].tolist() == [f"val/{val_name(i)}" for i in range(1, 7)]
    assert frame["wnid"].tolist() == EXPECTED
    assert tree(tmp_path) == before  # nothing written into root, its parent or left in scratch


def test_img_val_folder_with_devkit_folder_in_root(tmp_path: Path) -> None:
    write_images(tmp_path / "ILSVRC2012_img_val", [1, 2])
    write_devkit(tmp_path)
    frame = scan_imagenet_val(tmp_path)
    assert frame["path"].tolist() == [f"ILSVRC2012_img_val/{val_name(i)}" for i in (1, 2)]
    assert frame["wnid"].tolist() == EXPECTED[:2]


def test_partial_copy_lists_only_files_on_disk(tmp_path: Path) -> None:
    write_images(tmp_path / "val", [5, 2])
    frame = scan_imagenet_val(tmp_path, write_devkit_archive(tmp_path))
    assert frame["path"].tolist() == [f"val/{val_name(i)}" for i in (2, 5)]
    assert frame["wnid"].tolist() == [EXPECTED[1], EXPECTED[4]]


def test_torchvision_split_layout_needs_no_devkit(tmp_path: Path) -> None:
    for number, wnid in zip((3, 1, 2), ("n02", "n01", "n01"), strict=True):
        write_images(tmp_path / "val" / f"{wnid}000000", [number])
    frame = scan_imagenet_val(tmp_path)
    assert frame["path"].tolist() == [f"val/n01000000/{val_name(1)}",
                                      f"val/n01000000/{val_name(2)}",
                                      f"val/n02000000/{val_name(3)}"]
    assert frame["wnid"].tolist() == ["n01000000", "n01000000", "n02000000"]


def test_labels_match_torchvision_imagenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's own devkit parsing (MD5 check bypassed) gives the same labels."""
    import torchvision.datasets.imagenet as tv

    write_images(tmp_path / "val", list(range(1, 7)))
    kit_root = tmp_path / "tv"
    kit_root.mkdir()
    write_devkit_archive(kit_root)
    monkeypatch.setattr(tv, "check_integrity", lambda *args, **kwargs: True)
    tv.parse_devkit_archive(str(kit_root))
    assert tv.load_meta_file(str(kit_root))[1] == EXPECTED
    assert scan_imagenet_val(tmp_path, kit_root / f"{DEVKIT}.tar.gz")["wnid"].tolist() == EXPECTED


def one_line_error(root: Path, devkit: Path | None = None) -> str:
    with pytest.raises(UserError) as info:
        scan_imagenet_val(root, devkit)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_root(tmp_path: Path) -> None:
    assert str(tmp_path / "nope") in one_line_error(tmp_path / "nope")


def test_no_val_files_names_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "cat.jpg").write_bytes(b"")
    message = one_line_error(tmp_path)
    assert str(tmp_path) in message and "ILSVRC2012_val_" in message
    assert "ILSVRC2012_img_val" in message


def test_devkit_not_found_names_archive_and_folders(tmp_path: Path) -> None:
    root = tmp_path / "val"
    write_images(root, [1])
    message = one_line_error(root)
    assert f"{DEVKIT}.tar.gz" in message and str(root) in message and str(tmp_path) in message
    assert str(tmp_path / "gone.tar.gz") in one_line_error(root, tmp_path / "gone.tar.gz")


def test_devkit_folder_without_meta(tmp_path: Path) -> None:
    write_images(tmp_path / "val", [1])
    kit = write_devkit(tmp_path / "kit")
    (kit / "data" / "meta.mat").unlink()
    message = one_line_error(tmp_path, kit)
    assert str(kit) in message and "meta.mat" in message


def test_scipy_missing_says_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "val", [1])
    kit = write_devkit(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    message = one_line_error(tmp_path)
    assert "pip install scipy" in message and str(kit) in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_archive"])
def test_corrupt_devkit_archive(tmp_path: Path, damage: str) -> None:
    write_images(tmp_path / "val", [1])
    archive = write_devkit_archive(tmp_path)
    if damage == "garbage":
        archive.write_bytes(b"this is not a tar.gz file")
    elif damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:300])
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tmp_path / "val", arcname="val")
    message = one_line_error(tmp_path)
    assert str(archive) in message and "corrupt" in message


def test_file_beyond_ground_truth_is_an_error(tmp_path: Path) -> None:
    write_images(tmp_path / "val", [1, 7])
    write_devkit(tmp_path)
    assert str(tmp_path / "val" / val_name(7)) in one_line_error(tmp_path)


def test_ground_truth_naming_a_non_leaf_synset_is_an_error(tmp_path: Path) -> None:
    write_images(tmp_path / "val", [1])
    kit = write_devkit(tmp_path, ground_truth=[4])
    assert str(kit) in one_line_error(tmp_path)
