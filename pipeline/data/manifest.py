"""The analysed images of a workflow as a manifest, labelled in the model's class order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import Workflow


def scan_data(workflow: Workflow, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest with labels in the model's class order, the model's class table)."""
    from pipeline.data.classes import class_table
    from pipeline.data.images import scan_image_folder

    if workflow.data.source == "imagenet":
        from pipeline.data.imagenet import scan_imagenet_val

        devkit = Path(workflow.data.devkit).expanduser() if workflow.data.devkit else None
        found = scan_imagenet_val(root, devkit)
        folders = sorted(set(found["wnid"]))
        folder_of = found["wnid"].map({name: i for i, name in enumerate(folders)})
        manifest = pd.DataFrame({"image_id": range(len(found)), "path": found["path"],
                                 "label": folder_of.to_numpy()})
    else:
        manifest, folders = scan_image_folder(root)
    classes, model_label = class_table(workflow, folders, root)
    manifest["label"] = manifest["label"].map(dict(enumerate(model_label))).astype("int64")
    return manifest, classes
