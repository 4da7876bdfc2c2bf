"""Reading the official ImageNet (ILSVRC2012) validation set as downloaded from image-net.org.

``ILSVRC2012_img_val.tar`` extracts to 50,000 flat files ``ILSVRC2012_val_00000001.JPEG`` ...
``ILSVRC2012_val_00050000.JPEG`` with no class folders, so the files themselves carry no labels.
The labels are in the separate devkit ``ILSVRC2012_devkit_t12.tar.gz``: line *i* of
``data/ILSVRC2012_validation_ground_truth.txt`` is the ILSVRC2012_ID of image *i*, and
``data/meta.mat`` maps each ILSVRC2012_ID to its WordNet id (wnid, e.g. ``n01440764``).

Accepted layouts of ``root``, so that users need not reorganise what they downloaded:

* the flat folder itself;
* a folder holding the flat folder as ``val/`` or ``ILSVRC2012_img_val/``;
* torchvision's ``ImageNet`` root, whose ``val/`` is already split into wnid sub-folders: the
  folder names are the labels, and no devkit is needed.

The devkit may be the ``.tar.gz`` or its extracted folder; the archive is read into a temporary
directory, never into ``root`` (which may be read-only). The two devkit parsers mirror the ones
torchvision nests inside ``torchvision.datasets.imagenet.parse_devkit_archive``: they are not
importable on their own, and that function insists on the official archive's MD5 and writes
``meta.bin`` into its root.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import zlib
from pathlib import Path

import pandas as pd

from pipeline.data.images import DataWarning, is_image_file
from pipeline.errors import UserError

DEVKIT = "ILSVRC2012_devkit_t12"
META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
FLAT_FOLDERS = ("val", "ILSVRC2012_img_val")
VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG", re.IGNORECASE)
WNID = re.compile(r"n\d{8}")


def scan_imagenet_val(root: Path, devkit: Path | None = None,
                      warnings: list[DataWarning] | None = None) -> pd.DataFrame:
    """List the validation images under ``root`` with their wnid, sorted by file name.

    Returns columns ``path`` (POSIX, relative to ``root``) and ``wnid``. Only files on disk are
    listed, so a partial copy works; ``devkit`` is the archive or its extracted folder (None
    looks in ``root`` and its parent) and is read only for the flat layout. In the wnid-folder
    layout an empty folder, or one that cannot be listed, is appended to ``warnings``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"ImageNet folder {root} does not exist; point the data root at the "
                        "folder you extracted ILSVRC2012_img_val.tar into")
    flat = _flat_files(root)
    if not flat:
        split = _split_files(root, [] if warnings is None else warnings)
        if not split:
            looked = ", ".join(str(d) for d in (root, *(root / n for n in FLAT_FOLDERS)))
            raise UserError(f"no ImageNet validation images in {root}: looked for "
                            f"ILSVRC2012_val_########.JPEG in {looked} and for wnid sub-folders "
                            f"in {root / 'val'}; point the data root at the extracted val files")
        rows = split
    else:
        kit = Path(devkit).expanduser() if devkit is not None else _find_devkit(root)
        wnids = _read_devkit(kit)
        rows = []
        for number, path in flat:
            if not 1 <= number <= len(wnids):
                raise UserError(f"{path} is image {number}, but the ground truth in {kit} has "
                                f"{len(wnids)} images; remove the file or use the ILSVRC2012 "
                                "devkit that matches these files")
            rows.append((path, wnids[number - 1]))
    rows.sort(key=lambda row: (row[0].name, row[0]))
    return pd.DataFrame({
        "path": pd.Series([p.relative_to(root).as_posix() for p, _ in rows], dtype=object),
        "wnid": pd.Series([w for _, w in rows], dtype=object),
    })


def _flat_files(root: Path) -> list[tuple[int, Path]]:
    """(image number, path) of the flat val files in the first folder that has any."""
    for folder in (root, *(root / name for name in FLAT_FOLDERS)):
        if folder.is_dir():
            found = [(int(m.group(1)), p) for p in folder.iterdir()
                     if (m := VAL_FILE.fullmatch(p.name)) and is_image_file(p)]
            if found:
                return found
    return []


def _split_files(root: Path, warnings: list[DataWarning]) -> list[tuple[Path, str]]:
    """(path, wnid) of the images in torchvision's ``val/<wnid>/`` folders."""
    val = root / "val"
    if not val.is_dir():
        return []
    found: list[tuple[Path, str]] = []
    notes: list[DataWarning] = []
    for folder in sorted(val.iterdir()):
        if not (folder.is_dir() and WNID.fullmatch(folder.name)):
            continue
        name = folder.relative_to(root).as_posix()
        try:
            files = [p for p in folder.iterdir() if is_image_file(p)]
        except OSError as error:
            notes.append(DataWarning.unlistable(name, error, "class folder"))
            continue
        if not files:
            notes.append(DataWarning.empty(name))
        found.extend((p, folder.name) for p in files)
    if found:  # with no images at all the caller looks for other layouts, then refuses
        warnings.extend(notes)
    return found


def _find_devkit(root: Path) -> Path:
    """The extracted devkit folder or its archive in ``root`` or ``root``'s parent."""
    places = list(dict.fromkeys((root.resolve(), root.resolve().parent)))
    for place in places:
        for candidate in (place / DEVKIT, place / f"{DEVKIT}.tar.gz"):
            if candidate.exists():
                return candidate
    searched = " and ".join(str(p) for p in places)
    raise UserError(f"ImageNet devkit not found: looked for {DEVKIT}.tar.gz or the extracted "
                    f"{DEVKIT}/ folder in {searched}; download {DEVKIT}.tar.gz from "
                    "image-net.org into one of them, or set [data] devkit to its path")


def _read_devkit(devkit: Path) -> list[str]:
    """The wnid of every validation image, in ground-truth order (index = image number - 1)."""
    if devkit.is_dir():
        folder = devkit / DEVKIT if (devkit / DEVKIT).is_dir() else devkit
        for name in (META_MAT, GROUND_TRUTH):
            if not (folder / name).is_file():
                raise UserError(f"ImageNet devkit folder {folder} lacks {name}; pass the "
                                f"extracted {DEVKIT} folder or {DEVKIT}.tar.gz")
        return _parse_devkit(folder, devkit)
    if not devkit.is_file():
        raise UserError(f"ImageNet devkit {devkit} does not exist; pass the path of "
                        f"{DEVKIT}.tar.gz or of its extracted {DEVKIT} folder")
    with tempfile.TemporaryDirectory(prefix="deconv-atlas-devkit-") as tmp:
        folder = Path(tmp) / DEVKIT
        members = {}
        try:  # only the two files we read, by our own names: no path in the archive is trusted
            with tarfile.open(devkit) as archive:
                for name in (META_MAT, GROUND_TRUTH):
                    source = archive.extractfile(f"{DEVKIT}/{name}")
                    if source is None:
                        raise KeyError(name)
                    members[name] = source.read()
        except (tarfile.TarError, KeyError, EOFError, OSError, zlib.error) as error:
            raise UserError(f"ImageNet devkit archive {devkit} is corrupt or not the ILSVRC2012 "
                            f"devkit ({_first_line(error)}); download {DEVKIT}.tar.gz "
                            "again") from None
        for name, data in members.items():  # a full disk here is the machine's, not the archive's
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return _parse_devkit(folder, devkit)


def _parse_devkit(folder: Path, source: Path) -> list[str]:
    """Map the ground truth's ILSVRC2012_IDs to wnids, as torchvision's ImageNet does."""
    try:
        import scipy.io
    except ImportError:
        raise UserError(f"reading the ImageNet devkit {source} needs scipy; run "
                        "pip install scipy") from None
    try:
        # torchvision's parse_meta_mat: leaf synsets (num_children == 0) are the 1000 classes.
        synsets = scipy.io.loadmat(folder / META_MAT, squeeze_me=True)["synsets"].ravel()
        leaves = synsets[synsets["num_children"] == 0]
        id_to_wnid = {int(i): str(w) for i, w in zip(leaves["ILSVRC2012_ID"], leaves["WNID"],
                                                     strict=True)}
        # torchvision's parse_val_groundtruth_txt: one ILSVRC2012_ID per line.
        ids = [int(line) for line in (folder / GROUND_TRUTH).read_text().split()]
        return [id_to_wnid[i] for i in ids]
    except (ValueError, KeyError, IndexError, TypeError, scipy.io.matlab.MatReadError) as error:
        raise UserError(f"ImageNet devkit {source} is unreadable ({_first_line(error)}); download "
                        f"{DEVKIT}.tar.gz again") from None


def _first_line(error: BaseException) -> str:
    """The error's type and first line, to keep a UserError one line long."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
