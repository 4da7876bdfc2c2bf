"""Stage ``invariance`` (Figure 5): feature distances under translation, scaling and rotation.

What ``invariance.parquet`` holds: :mod:`pipeline.experiments.invariance_run`.
"""

from __future__ import annotations

import numpy as np

from pipeline.catalog import (
    ACTIVATIONS,
    ANALYSED_IMAGES,
    ANALYSED_MODEL,
    CLASSES,
    INVARIANCE,
    MANIFEST,
)
from pipeline.errors import UserError
from pipeline.run_inputs import analysed_images, analysed_model, preprocessing
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: per-transform samples that leave out the classes a transform can change (the
# demo's stripes under rotation; [invariance] exclude_*), and their names in the metadata
@register_stage("invariance", revision=2,
                reads=(*ANALYSED_MODEL, *ANALYSED_IMAGES, ACTIVATIONS),
                writes=(INVARIANCE,),
                config=("data.source", "data.root", "model", "invariance"),
                # the model is the trained one when the workflow trains (its inputs say which)
                unkeyed=("train.enabled",),
                enabled=lambda workflow: workflow.invariance.images > 0
                or bool(workflow.invariance.files))
def invariance(ctx: StageContext) -> None:
    """measure feature and class invariance to translation, scale and rotation (Figure 5)"""
    from pipeline.experiments.invariance import feature_layers
    from pipeline.experiments.invariance_run import Pixels, write_invariance_table
    from pipeline.experiments.invariance_sampling import (
        excluded_classes,
        image_order,
        transform_images,
    )
    from pipeline.inference.store import store_layers

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.invariance
    manifest, classes = ctx.read(MANIFEST), ctx.read(CLASSES)
    activations = ctx.read(ACTIVATIONS)
    class_names = [str(name) for name in classes["name"]]
    options = {"translation": spec.exclude_translation, "scale": spec.exclude_scale,
               "rotation": spec.exclude_rotation}
    declared = _declared(workflow.data.source)
    excluded = excluded_classes(class_names, options, declared)
    labels = {name: label for label, name in enumerate(class_names)}
    plan = transform_images(manifest, np.asarray(activations["pred"][:, 0]) >= 0, spec.images,
                            spec.files, {t: {labels[n] for n in names}
                                         for t, names in excluded.items()})
    image_ids = image_order(plan)
    analysed = store_layers(activations)
    if not analysed:
        raise UserError("[invariance]: the activations store records no layer; set "
                        "[activations] modules or leave it empty for every conv layer")
    device = ctx.compute_on(spec, deterministic=True)
    model = analysed_model(workflow, layout, classes, device)
    layers = feature_layers(model, analysed[0].module, analysed[-1].module, analysed[0].label,
                            analysed[-1].label)
    prep = preprocessing(workflow)
    write_invariance_table(ctx.output(INVARIANCE), model,
                           analysed_images(workflow, layout, manifest), plan, layers,
                           spec.batch_size, Pixels(prep.input_size, prep.mean, prep.std),
                           str(device),
                           excluded, _excluded_by(excluded, options, declared))
    print(f"[invariance] {len(image_ids)} images, layer 1 = {layers.first_label}, last hidden "
          f"layer = {layers.last_label}")
    for transform, names in excluded.items():
        if names:
            print(f"[invariance] {transform}: left out {', '.join(names)} (the transform can "
                  "change their class)")


def _declared(source: str) -> dict[str, tuple[str, ...]]:
    """What the data set declares about its classes: which transforms change their label."""
    if source != "synthetic":
        return {}
    from pipeline.data.synthetic import LABEL_CHANGED_BY

    return LABEL_CHANGED_BY


def _excluded_by(excluded: dict[str, tuple[str, ...]], options: dict[str, tuple[str, ...]],
                 declared: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Per transform, who left its classes out, as the page says it."""
    said = {}
    for transform, names in excluded.items():
        by_data = any(transform in declared.get(name, ()) for name in names)
        by_workflow = bool(options[transform])
        said[transform] = " and ".join(
            who for who, yes in (("the data set", by_data),
                                 (f"[invariance] exclude_{transform}", by_workflow)) if yes)
    return said
