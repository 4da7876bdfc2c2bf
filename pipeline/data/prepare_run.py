"""The analysed (and training) images of a workflow as manifests, labelled in the model's class
order: what the prepare stage writes, and what the preflight scans before any stage runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.errors import UserError

if TYPE_CHECKING:
    from pipeline.data.images import DataWarning


@dataclass(frozen=True)
class ScanSettings:
    """How a workflow's images are scanned: ``[data] source`` and ``devkit``, whether it
    trains (then the training folder is scanned too, and the classes are its folders), the
    class names of the published weights analysed (None without), and the workflow file that
    errors name."""

    source: str
    devkit: Path | None
    trains: bool
    categories: list[str] | None
    workflow_file: str


@dataclass
class ScannedData:
    """The manifests and class table of a workflow's data, and what is odd about its folders."""

    manifest: pd.DataFrame
    classes: pd.DataFrame
    train_manifest: pd.DataFrame | None = None
    warnings: list[DataWarning] = field(default_factory=list)


def scan_workflow_data(settings: ScanSettings, root: Path, train_folder: Path) -> ScannedData:
    """Scan the analysed images under ``root`` and, when the workflow trains, the training
    images under ``train_folder``; both need the same class sub-folders."""
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found (from [data] root in "
                        f"{settings.workflow_file}); point [data] root or --data at your images")
    warnings: list[DataWarning] = []
    scanned = ScannedData(*scan_data(settings, root, warnings), warnings=warnings)
    if settings.trains:
        if not train_folder.is_dir():
            raise UserError(f"{train_folder}: training folder not found (from [data] train_root "
                            f"in {settings.workflow_file})")
        train_warnings: list[DataWarning] = []
        train_manifest, train_classes = scan_data(settings, train_folder, train_warnings,
                                                  training=True)
        scanned.warnings += [replace(warning, message=f"training images: {warning.message}")
                             for warning in train_warnings]
        if train_classes["name"].tolist() != scanned.classes["name"].tolist():
            raise UserError(f"{train_folder}: its class folders differ from those of {root}; "
                            "both need the same class sub-folders")
        scanned.train_manifest = train_manifest
    return scanned


def scan_data(settings: ScanSettings, root: Path, warnings: list[DataWarning] | None = None,
              training: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest with labels in the model's class order, the model's class table); what is
    wrong with the folder but does not stop the run is appended to ``warnings``.

    ``training`` images are always class folders, also for source 'imagenet': ILSVRC2012's
    training set comes as one archive per class, each extracted into its wnid folder
    (``train/n01440764/n01440764_10026.JPEG``), never as flat files with a devkit's labels.
    """
    from pipeline.data.classes import class_table
    from pipeline.data.images import scan_image_folder

    if settings.source == "imagenet" and not training:
        from pipeline.data.imagenet import scan_imagenet_val

        found = scan_imagenet_val(root, settings.devkit, warnings)
        folders = sorted(set(found["wnid"]))
        folder_of = found["wnid"].map({name: i for i, name in enumerate(folders)})
        manifest = pd.DataFrame({"image_id": range(len(found)), "path": found["path"],
                                 "label": folder_of.to_numpy()})
    else:
        manifest, folders = scan_image_folder(root, warnings)
    classes, model_label = class_table(folders, root, settings.categories, settings.trains,
                                       settings.workflow_file)
    manifest["label"] = manifest["label"].map(dict(enumerate(model_label))).astype("int64")
    return manifest, classes
