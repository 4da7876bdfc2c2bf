"""Stage ``featurevis``: for every analysed unit, the input it wants, found by optimisation.

How: :mod:`pipeline.featurevis` (Lucid's recipe, many units per batch, the forward pass
stopping at the unit's layer); the store and how a killed run continues:
:mod:`pipeline.featurevis.store`.
"""

from __future__ import annotations

from pipeline.atomic import zarr_writes_settled
from pipeline.catalog import ACTIVATIONS, ANALYSED_MODEL, CLASSES, FEATUREVIS, UNITS
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("featurevis", revision=1,
                reads=(*ANALYSED_MODEL, CLASSES, ACTIVATIONS, UNITS),
                writes=(FEATUREVIS,),
                config=("model", "featurevis"),
                # the model is the trained one when the workflow trains (its inputs say which)
                unkeyed=("train.enabled",),
                enabled=lambda workflow: workflow.featurevis.enabled)
def featurevis(ctx: StageContext) -> None:
    """optimise an input for every unit (what it wants, beside what it found)"""
    import numpy as np
    import torch

    from pipeline.featurevis.featurevis_run import (
        LayerUnits,
        Recipe,
        plan_layers,
        write_featurevis,
    )
    from pipeline.inference.store import store_layers
    from pipeline.interp import receptive_fields
    from pipeline.labelled import array_in
    from pipeline.ranking.picks import class_priors, most_selective
    from pipeline.run_inputs import analysed_model, preprocessing
    from pipeline.schemas import Units

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.featurevis
    device = ctx.compute_on(spec)
    classes = ctx.read(CLASSES)
    model = analysed_model(workflow, layout, classes, device)
    prep = preprocessing(workflow)
    size, channels = prep.input_size, len(prep.mean)
    activations = ctx.read(ACTIVATIONS)
    units = ctx.read(UNITS)
    fields = receptive_fields(model, (size, size))
    priors = class_priors(np.asarray(array_in(activations, "label")[...]),
                          np.asarray(array_in(activations, "pred")[:, 0]), len(classes))
    chosen, peaks = [], {}
    for meta in store_layers(activations):
        rows = units[units[Units.layer] == meta.label].sort_values(Units.unit)
        picked = tuple(range(meta.channels)) if spec.units <= 0 else \
            tuple(sorted(most_selective(rows, priors, spec.units)))
        chosen.append(LayerUnits(meta.label, meta.module, fields[meta.module], picked))
        peak = rows.set_index(Units.unit)[Units.peak]
        peaks[meta.label] = peak.reindex(list(picked)).fillna(0).to_numpy(np.float32)
    mean = torch.tensor(prep.mean, device=device).view(-1, 1, 1)
    std = torch.tensor(prep.std, device=device).view(-1, 1, 1)
    layers = plan_layers(model, chosen, size, channels, device)
    with zarr_writes_settled():  # a full disk is one error, not a trail of zarr's tasks
        write_featurevis(ctx.output(FEATUREVIS), model, layers,
                         Recipe(spec.steps, spec.lr, spec.seed, spec.batch_size), size,
                         channels, lambda images: (images - mean) / std, peaks, device)
