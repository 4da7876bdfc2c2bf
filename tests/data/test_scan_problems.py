"""Nothing in the data folder vanishes silently: broken links get an image_id (the activations
stage lists them as skipped), empty and unlistable class folders become warnings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from PIL import Image
from test_imagenet import val_name, write_devkit
from test_imagenet import write_images as write_val_images

from pipeline.data.imagenet import scan_imagenet_val
from pipeline.data.images import (
    DataWarning,
    ImageDataset,
    is_image_file,
    read_data_warnings,
    scan_image_folder,
    write_data_warnings,
)
from pipeline.data.tolerant import unreadable_reason
from pipeline.errors import UserError
from pipeline.models.preprocessing import Preprocessing


def _permissions_enforced() -> bool:
    """False for root (os.geteuid() == 0) unless it runs without CAP_DAC_OVERRIDE, e.g. under
    ``setpriv --bounding-set=-dac_override,-dac_read_search``."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0)
        try:
            os.listdir(tmp)
        except PermissionError:
            return True
        finally:
            os.chmod(tmp, 0o700)
    return False


needs_permissions = pytest.mark.skipif(not _permissions_enforced(),
                                       reason="running as root: every file can be read")


def _write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _write(root / "cat" / "a.png")
    (root / "cat" / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (root / "cat" / "loop.png").symlink_to("loop.png")
    (root / "cat" / "notes.txt").symlink_to(tmp_path / "deleted.txt")  # not an image name
    os.mkfifo(root / "cat" / "pipe.jpg")  # opening it would block the run forever
    (root / "cat" / "folder.jpg").mkdir()
    _write(root / "dog" / "b.png")
    (root / "empty").mkdir()
    (root / "only_text").mkdir()
    (root / "only_text" / "readme.txt").write_text("no images here")
    return root


def test_broken_links_are_listed_and_empty_folders_warned(folder: Path) -> None:
    warnings: list[DataWarning] = []
    frame, classes = scan_image_folder(folder, warnings)
    assert classes == ["cat", "dog", "empty", "only_text"]  # empty folders still count
    assert frame["path"].tolist() == ["cat/a.png", "cat/gone.jpg", "cat/loop.png", "dog/b.png"]
    assert frame["label"].tolist() == [0, 0, 0, 1]
    assert warnings == [DataWarning("empty_folder", "empty", "class folder 'empty' has no images"),
                        DataWarning("empty_folder", "only_text",
                                    "class folder 'only_text' has no images")]
    assert not any(str(folder) in warning.message for warning in warnings)


def test_warnings_are_optional_for_callers_that_do_not_want_them(folder: Path) -> None:
    frame, classes = scan_image_folder(folder)
    assert len(frame) == 4 and len(classes) == 4


def test_is_image_file_keeps_links_that_cannot_be_followed(folder: Path) -> None:
    cat = folder / "cat"
    assert is_image_file(cat / "a.png") and is_image_file(cat / "gone.jpg")
    assert is_image_file(cat / "loop.png")
    for name in ("notes.txt", "pipe.jpg", "folder.jpg"):
        assert not is_image_file(cat / name), name
    assert not is_image_file(folder / "cat" / "never-existed.jpg")


def test_a_broken_link_reads_as_one_clear_line_without_the_data_root(folder: Path) -> None:
    frame, _ = scan_image_folder(folder)
    images = ImageDataset(folder, frame["path"], frame["label"],
                          Preprocessing(8, 8, (0.5,) * 3, (0.5,) * 3).transform())
    with pytest.raises(UserError, match="broken symbolic link") as info:
        images[1]  # cat/gone.jpg
    reason = unreadable_reason(info.value, folder)
    assert reason == ("FileNotFoundError: [Errno 2] broken symbolic link (its target does not "
                      "exist): 'cat/gone.jpg'")
    with pytest.raises(UserError) as info:
        images[2]  # cat/loop.png
    assert str(folder) not in unreadable_reason(info.value, folder)
    assert "cat/loop.png" in unreadable_reason(info.value, folder)


@needs_permissions
def test_an_unlistable_class_folder_is_a_warning_not_a_silent_gap(folder: Path) -> None:
    _write(folder / "dog" / "private" / "c.png")
    (folder / "locked").mkdir()
    for locked in (folder / "dog" / "private", folder / "locked"):
        locked.chmod(0)
    try:
        warnings: list[DataWarning] = []
        frame, classes = scan_image_folder(folder, warnings)
    finally:
        for locked in (folder / "dog" / "private", folder / "locked"):
            locked.chmod(0o755)
    assert "locked" in classes and "dog/private/c.png" not in set(frame["path"])
    messages = [warning.message for warning in warnings]
    assert ("folder 'dog/private' cannot be listed (PermissionError: Permission denied); its "
            "images are left out") in messages
    assert ("class folder 'locked' cannot be listed (PermissionError: Permission denied); its "
            "images are left out") in messages
    assert "class folder 'locked' has no images" not in messages


@needs_permissions
def test_unreadable_files_are_listed_and_read_as_a_clear_reason(folder: Path) -> None:
    _write(folder / "dog" / "secret.png")
    _write(folder / "blind" / "c.png")  # listable, but its entries cannot be examined
    (folder / "dog" / "secret.png").chmod(0)
    (folder / "blind").chmod(0o444)
    try:
        frame, _ = scan_image_folder(folder)
        images = ImageDataset(folder, frame["path"], frame["label"],
                              Preprocessing(8, 8, (0.5,) * 3, (0.5,) * 3).transform())
        reasons = {}
        for name in ("dog/secret.png", "blind/c.png"):
            with pytest.raises(UserError) as info:
                images[frame["path"].tolist().index(name)]
            reasons[name] = unreadable_reason(info.value, folder)
    finally:
        (folder / "dog" / "secret.png").chmod(0o644)
        (folder / "blind").chmod(0o755)
    assert reasons == {name: f"PermissionError: [Errno 13] Permission denied: '{name}'"
                       for name in reasons}


def test_imagenet_flat_layout_keeps_a_broken_link(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    write_val_images(root, [1, 2, 3, 5, 6])
    (root / val_name(4)).symlink_to(tmp_path / "deleted.JPEG")
    frame = scan_imagenet_val(root, write_devkit(tmp_path / "kits"))
    assert frame["path"].tolist() == [val_name(i) for i in range(1, 7)]


def test_imagenet_wnid_folders_keep_broken_links_and_warn_when_empty(tmp_path: Path) -> None:
    val = tmp_path / "val"
    _write(val / "n01440764" / "a.JPEG")
    (val / "n01440764" / "b.JPEG").symlink_to(tmp_path / "deleted.JPEG")
    (val / "n01443537").mkdir()
    warnings: list[DataWarning] = []
    frame = scan_imagenet_val(tmp_path, warnings=warnings)
    assert frame["path"].tolist() == ["val/n01440764/a.JPEG", "val/n01440764/b.JPEG"]
    assert [warning.message for warning in warnings] == [
        "class folder 'val/n01443537' has no images"]


@needs_permissions
def test_imagenet_unlistable_wnid_folder_is_a_warning(tmp_path: Path) -> None:
    _write(tmp_path / "val" / "n01440764" / "a.JPEG")
    locked = tmp_path / "val" / "n01443537"
    _write(locked / "b.JPEG")
    locked.chmod(0)
    try:
        warnings: list[DataWarning] = []
        frame = scan_imagenet_val(tmp_path, warnings=warnings)
    finally:
        locked.chmod(0o755)
    assert frame["path"].tolist() == ["val/n01440764/a.JPEG"]
    assert [warning.kind for warning in warnings] == ["unlistable_folder"]
    assert "'val/n01443537' cannot be listed" in warnings[0].message


def test_warnings_file_round_trip_and_absent_or_broken_means_none(tmp_path: Path) -> None:
    path = tmp_path / "data_warnings.json"
    assert read_data_warnings(path) == []  # a run made before the file existed
    warnings = [DataWarning.empty("cat"), DataWarning("unlistable_folder", "dog", "x")]
    write_data_warnings(path, warnings)
    assert read_data_warnings(path) == warnings
    path.write_text('{"warnings": [')  # cut off
    assert read_data_warnings(path) == []
