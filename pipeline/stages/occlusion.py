"""Stage ``occlusion`` (Figure 7): a grey square slid over sample images.

What ``occlusion.zarr`` holds: :mod:`pipeline.experiments.occlusion_run`.
"""

from __future__ import annotations

import numpy as np

from pipeline.catalog import (
    ACTIVATIONS,
    ANALYSED_IMAGES,
    ANALYSED_MODEL,
    CLASSES,
    MANIFEST,
    OCCLUSION,
)
from pipeline.run_inputs import analysed_images, analysed_model, preprocessing
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: dimension names and coordinates (pipeline.labelled)
@register_stage("occlusion", revision=2,
                reads=(*ANALYSED_MODEL, *ANALYSED_IMAGES, ACTIVATIONS),
                writes=(OCCLUSION,),
                config=("data.source", "data.root", "model", "occlusion", "activations.modules"),
                # the model is the trained one when the workflow trains (its inputs say which)
                unkeyed=("train.enabled",),
                enabled=lambda workflow: workflow.occlusion.images > 0
                or bool(workflow.occlusion.files))
def occlusion(ctx: StageContext) -> None:
    """occlude sample images with a sliding grey square (Figure 7)"""
    from pipeline.experiments.occlusion_run import (
        occlude_images,
        square_grid,
        tracked_layer,
        write_occlusion_store,
    )
    from pipeline.experiments.sampling import experiment_images
    from pipeline.inference.store import store_layers
    from pipeline.labelled import ImageCoords
    from pipeline.progress import progress_bar

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.occlusion
    manifest, classes = ctx.read(MANIFEST), ctx.read(CLASSES)
    activations = ctx.read(ACTIVATIONS)
    image_ids = experiment_images(manifest, np.asarray(activations["pred"][:, 0]) >= 0,
                                  spec.images, spec.files, "occlusion", "occlude")
    modules = {meta.label: meta.module for meta in store_layers(activations)}
    label, module = tracked_layer(list(modules), spec.layer, modules.__getitem__)
    prep = preprocessing(workflow)
    grid = square_grid(prep.input_size, spec.size, spec.stride)
    device = ctx.compute_on(spec, deterministic=True)
    model = analysed_model(workflow, layout, classes, device)
    rows, columns = grid.shape
    bar = progress_bar("occlusion", total=len(image_ids) * rows * columns, unit="pos")
    arrays = occlude_images(model, analysed_images(workflow, layout, manifest), image_ids,
                            module, grid, spec.batch_size, prep.mean, prep.std, bar.update)
    bar.close()
    write_occlusion_store(ctx.output(OCCLUSION), arrays, label, module, grid,
                          ImageCoords.of_run(manifest, classes, image_ids),
                          str(device))
    print(f"[occlusion] {len(image_ids)} images, a {grid.size} px square every {grid.stride} px "
          f"({rows} x {columns} positions), tracking {label}")
