"""Stage ``prepare``: the manifest of analysed images, labelled in the model's class order."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.atomic import read_json, write_json
from pipeline.catalog import (
    CLASSES,
    DATA_WARNINGS,
    IMAGE_LISTING,
    MANIFEST,
    SYNTHETIC_DATA,
    SYNTHETIC_SETTINGS,
    TRAIN_MANIFEST,
)
from pipeline.data.prepare_run import scan_workflow_data
from pipeline.run_inputs import analysed_root, scan_settings, train_root
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage

if TYPE_CHECKING:
    from pipeline.data.images import DataWarning

# A partial ImageNet copy can have hundreds of empty class folders: the terminal shows the first
# few, data_warnings.json (and the atlas's count) all of them.
WARNINGS_PRINTED = 10


@register_stage("prepare", reads=(IMAGE_LISTING,),
                writes=(MANIFEST, CLASSES, TRAIN_MANIFEST, SYNTHETIC_DATA, SYNTHETIC_SETTINGS,
                        DATA_WARNINGS),
                config=("data", "model.name", "model.weights", "train.enabled"))
def prepare(ctx: StageContext) -> None:
    """list the images (generating the demo's synthetic set first)"""
    workflow, layout = ctx.workflow, ctx.layout
    root, train_folder = analysed_root(workflow, layout), train_root(workflow, layout)
    if workflow.data.source == "synthetic":
        # Paths in the manifest are relative to the root, so scanning a staged copy is exact.
        generated = _generate_synthetic(ctx)
        root, train_folder = generated / "val", generated / "train"
    scanned = scan_workflow_data(scan_settings(workflow), root, train_folder)
    manifest, classes = scanned.manifest, scanned.classes
    ctx.write(MANIFEST, manifest)
    ctx.write(CLASSES, classes)
    if scanned.train_manifest is not None:
        ctx.write(TRAIN_MANIFEST, scanned.train_manifest)
    else:
        ctx.discard(TRAIN_MANIFEST)  # left by an earlier run that trained
    print(f"[prepare] {len(manifest)} images of {manifest['label'].nunique()} classes "
          f"(the model knows {len(classes)})")
    _record_warnings(ctx, scanned.warnings)


def _record_warnings(ctx: StageContext, warnings: list[DataWarning]) -> None:
    """Print the warnings and keep them for the atlas; with none, an older file goes."""
    from pipeline.data.images import write_data_warnings

    if not warnings:
        ctx.discard(DATA_WARNINGS)
        return
    write_data_warnings(ctx.output(DATA_WARNINGS), warnings)
    for warning in warnings[:WARNINGS_PRINTED]:
        print(f"[prepare] warning: {warning.message}")
    if len(warnings) > WARNINGS_PRINTED:
        print(f"[prepare] warning: {len(warnings) - WARNINGS_PRINTED} more, all listed in "
              f"{ctx.path(DATA_WARNINGS)}")


def _generate_synthetic(ctx: StageContext) -> Path:
    """Generate the demo images, unless the folder already holds this exact data set; return
    the folder they are in now (the staged copy until the runner moves it into place)."""
    from pipeline.data.synthetic import generate_synthetic_dataset

    spec, folder = ctx.workflow.data.synthetic, ctx.path(SYNTHETIC_DATA)
    wanted = {"image_size": spec.image_size, "train_per_class": spec.train_per_class,
              "val_per_class": spec.val_per_class, "seed": spec.seed}
    settings = ctx.path(SYNTHETIC_SETTINGS)
    if read_json(settings) == wanted:
        return folder  # the generator is deterministic: same settings, same bytes
    staged = ctx.output(SYNTHETIC_DATA)
    generate_synthetic_dataset(staged, **wanted)
    write_json(staged / settings.name, wanted)
    return staged
