"""Stage ``prepare``: the manifest of analysed images (the demo first generates them)."""

from __future__ import annotations

import pandas as pd

from pipeline.data.roots import analysed_root, train_root
from pipeline.errors import UserError
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("prepare", sections=("data",))
def prepare(ctx: StageContext) -> None:
    """list the images (generating the demo's synthetic set first)"""
    from pipeline.data.images import scan_image_folder
    from pipeline.data.synthetic import generate_synthetic_dataset

    data, layout = ctx.workflow.data, ctx.layout
    if data.source == "synthetic":
        staged = ctx.output(layout.synthetic_data)
        spec = data.synthetic
        generate_synthetic_dataset(staged, image_size=spec.image_size,
                                   train_per_class=spec.train_per_class,
                                   val_per_class=spec.val_per_class, seed=spec.seed)
        # Paths in the manifest are relative to the root, so scanning the staged copy is exact.
        val_scan = staged / "val"
        train_scan = staged / "train"
    else:
        val_scan = analysed_root(ctx.workflow, layout)
        train_scan = train_root(ctx.workflow, layout)
        if not val_scan.is_dir():
            raise UserError(f"{val_scan}: data folder not found (from [data] root in "
                            f"{ctx.workflow.source}); point [data] root or --data at an image "
                            "folder with one sub-folder per class")
    manifest, classes = scan_image_folder(val_scan)
    write_parquet(manifest, ctx.output(layout.manifest))
    write_parquet(pd.DataFrame({"label": range(len(classes)), "name": classes}),
                  ctx.output(layout.classes))
    if ctx.workflow.train.enabled:
        if not train_scan.is_dir():
            raise UserError(f"{train_scan}: training folder not found (from [data] train_root in "
                            f"{ctx.workflow.source})")
        train_manifest, train_classes = scan_image_folder(train_scan)
        if train_classes != classes:
            raise UserError(f"{train_scan}: its class folders differ from those of {val_scan}; "
                            "both need the same class sub-folders")
        write_parquet(train_manifest, ctx.output(layout.train_manifest))
    print(f"[prepare] {len(manifest)} images in {len(classes)} classes")


def write_parquet(frame: pd.DataFrame, path) -> None:
    """Write ``frame`` without its index (the staging path is moved into place later)."""
    frame.to_parquet(path, index=False)
