"""Stage ``prepare``: the manifest of analysed images, labelled in the model's class order."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.atomic import read_json, write_json
from pipeline.data.manifest import scan_workflow_data
from pipeline.data.roots import analysed_root, train_root
from pipeline.stages.context import StageContext
from pipeline.stages.registry import Output, register_stage

if TYPE_CHECKING:
    from pipeline.data.images import DataWarning

# A partial ImageNet copy can have hundreds of empty class folders: the terminal shows the first
# few, data_warnings.json (and the atlas's count) all of them.
WARNINGS_PRINTED = 10


@register_stage("prepare", keys=("data", "model.name", "model.weights", "train.enabled"),
                outputs=("manifest", "classes", "train_manifest",
                         Output("synthetic_data", digested=False), "synthetic_settings",
                         "data_warnings"),
                lists_images=True)
def prepare(ctx: StageContext) -> None:
    """list the images (generating the demo's synthetic set first)"""
    workflow, layout = ctx.workflow, ctx.layout
    root, train_folder = analysed_root(workflow, layout), train_root(workflow, layout)
    if workflow.data.source == "synthetic":
        # Paths in the manifest are relative to the root, so scanning a staged copy is exact.
        generated = _generate_synthetic(ctx)
        root, train_folder = generated / "val", generated / "train"
    scanned = scan_workflow_data(workflow, root, train_folder)
    manifest, classes = scanned.manifest, scanned.classes
    manifest.to_parquet(ctx.output(layout.manifest), index=False)
    classes.to_parquet(ctx.output(layout.classes), index=False)
    if scanned.train_manifest is not None:
        scanned.train_manifest.to_parquet(ctx.output(layout.train_manifest), index=False)
    else:
        ctx.discard(layout.train_manifest)  # left by an earlier run that trained
    print(f"[prepare] {len(manifest)} images of {manifest['label'].nunique()} classes "
          f"(the model knows {len(classes)})")
    _record_warnings(ctx, scanned.warnings)


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


def _generate_synthetic(ctx: StageContext) -> Path:
    """Generate the demo images, unless the folder already holds this exact data set; return
    the folder they are in now (the staged copy until the runner moves it into place)."""
    from pipeline.data.synthetic import generate_synthetic_dataset

    spec, folder = ctx.workflow.data.synthetic, ctx.layout.synthetic_data
    wanted = {"image_size": spec.image_size, "train_per_class": spec.train_per_class,
              "val_per_class": spec.val_per_class, "seed": spec.seed}
    if read_json(ctx.layout.synthetic_settings) == wanted:
        return folder  # the generator is deterministic: same settings, same bytes
    staged = ctx.output(folder)
    generate_synthetic_dataset(staged, **wanted)
    write_json(staged / ctx.layout.synthetic_settings.name, wanted)
    return staged
