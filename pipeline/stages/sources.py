"""What the stages that run the analysed model over the analysed images read, named once.

The activations stage fills its chunks from it (here, in shard processes or on dask workers),
and rank measures a bfloat16 store's top candidates again in float32 from the same source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.catalog import MANIFEST
from pipeline.stages.context import StageContext

if TYPE_CHECKING:
    from pipeline.inference.shard import ShareSource


def share_source(ctx: StageContext, num_classes: int, absolute: bool = False) -> ShareSource:
    """The model, images, preprocessing and ``[activations]`` of the run; by absolute paths
    for dask workers, which start elsewhere."""
    from pipeline.inference.shard import ShareSource
    from pipeline.run_inputs import analysed_root, model_source, preprocessing

    workflow = ctx.workflow.with_absolute_paths() if absolute else ctx.workflow
    manifest = ctx.path(MANIFEST)
    root = analysed_root(workflow, ctx.layout)
    source = model_source(workflow, ctx.layout, num_classes)
    if absolute:
        from dataclasses import replace

        manifest, root = manifest.absolute(), root.absolute()
        source = replace(source, trained=source.trained.absolute() if source.trained else None)
    return ShareSource(source, root, manifest, preprocessing(workflow), workflow.activations)
