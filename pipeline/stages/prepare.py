"""Stage ``prepare``: the manifest of analysed images, labelled in the model's class order."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.atomic import read_json, write_json
from pipeline.data.roots import analysed_root, train_root
from pipeline.errors import UserError
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage

if TYPE_CHECKING:
    from pipeline.data.images import DataWarning

# A partial ImageNet copy can have hundreds of empty class folders: the terminal shows the first
# few, data_warnings.json (and the atlas's count) all of them.
WARNINGS_PRINTED = 10


@register_stage("prepare", keys=("data", "model.name", "model.weights", "train.enabled"),
                outputs=lambda workflow, layout: (
                    layout.manifest, layout.classes, layout.train_manifest,
                    layout.synthetic_data / "synthetic.json", layout.data_warnings))
def prepare(ctx: StageContext) -> None:
    """list the images (generating the demo's synthetic set first)"""
    workflow, layout = ctx.workflow, ctx.layout
    root, train_folder = analysed_root(workflow, layout), train_root(workflow, layout)
    if workflow.data.source == "synthetic":
        # Paths in the manifest are relative to the root, so scanning a staged copy is exact.
        generated = _generate_synthetic(ctx)
        root, train_folder = generated / "val", generated / "train"
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found (from [data] root in {workflow.source}); "
                        "point [data] root or --data at your images")
    warnings: list[DataWarning] = []
    manifest, classes = _scan(workflow, root, warnings)
    manifest.to_parquet(ctx.output(layout.manifest), index=False)
    classes.to_parquet(ctx.output(layout.classes), index=False)
    if workflow.train.enabled:
        if not train_folder.is_dir():
            raise UserError(f"{train_folder}: training folder not found (from [data] train_root "
                            f"in {workflow.source})")
        train_warnings: list[DataWarning] = []
        train_manifest, train_classes = _scan(workflow, train_folder, train_warnings)
        warnings += [replace(warning, message=f"training images: {warning.message}")
                     for warning in train_warnings]
        if train_classes["name"].tolist() != classes["name"].tolist():
            raise UserError(f"{train_folder}: its class folders differ from those of {root}; "
                            "both need the same class sub-folders")
        train_manifest.to_parquet(ctx.output(layout.train_manifest), index=False)
    print(f"[prepare] {len(manifest)} images of {manifest['label'].nunique()} classes "
          f"(the model knows {len(classes)})")
    _record_warnings(ctx, warnings)


def _record_warnings(ctx: StageContext, warnings: list[DataWarning]) -> None:
    """Print the warnings and keep them for the atlas; with none, an older file goes."""
    from pipeline.data.images import write_data_warnings

    if not warnings:
        ctx.discard(ctx.layout.data_warnings)
        return
    write_data_warnings(ctx.output(ctx.layout.data_warnings), warnings)
    for warning in warnings[:WARNINGS_PRINTED]:
        print(f"[prepare] warning: {warning.message}")
    if len(warnings) > WARNINGS_PRINTED:
        print(f"[prepare] warning: {len(warnings) - WARNINGS_PRINTED} more, all listed in "
              f"{ctx.layout.data_warnings}")


def _scan(workflow, root: Path,
          warnings: list[DataWarning]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest with labels in the model's class order, the model's class table); what is
    wrong with the folder but does not stop the run is appended to ``warnings``."""
    from pipeline.data.classes import class_table
    from pipeline.data.images import scan_image_folder

    if workflow.data.source == "imagenet":
        from pipeline.data.imagenet import scan_imagenet_val

        devkit = Path(workflow.data.devkit).expanduser() if workflow.data.devkit else None
        found = scan_imagenet_val(root, devkit, warnings)
        folders = sorted(set(found["wnid"]))
        folder_of = found["wnid"].map({name: i for i, name in enumerate(folders)})
        manifest = pd.DataFrame({"image_id": range(len(found)), "path": found["path"],
                                 "label": folder_of.to_numpy()})
    else:
        manifest, folders = scan_image_folder(root, warnings)
    classes, model_label = class_table(workflow, folders, root)
    manifest["label"] = manifest["label"].map(dict(enumerate(model_label))).astype("int64")
    return manifest, classes


def _generate_synthetic(ctx: StageContext) -> Path:
    """Generate the demo images, unless the folder already holds this exact data set; return
    the folder they are in now (the staged copy until the runner moves it into place)."""
    from pipeline.data.synthetic import generate_synthetic_dataset

    spec, folder = ctx.workflow.data.synthetic, ctx.layout.synthetic_data
    wanted = {"image_size": spec.image_size, "train_per_class": spec.train_per_class,
              "val_per_class": spec.val_per_class, "seed": spec.seed}
    if read_json(folder / "synthetic.json") == wanted:
        return folder  # the generator is deterministic: same settings, same bytes
    staged = ctx.output(folder)
    generate_synthetic_dataset(staged, **wanted)
    write_json(staged / "synthetic.json", wanted)
    return staged
