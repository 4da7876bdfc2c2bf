"""The sanity stage's figures as the atlas reads them, and the sentence a page says about them.

:func:`read_sanity` gathers ``sanity.parquet`` and ``input_dependence.parquet`` (see
:mod:`pipeline.sanity.store`) into a :class:`SanityFigures`; :func:`reading` turns one layer's
and method's headline (full randomisation) into one plain sentence. Its thresholds, on the
mean Spearman correlation and the mean SSIM, which must agree for either extreme to be said
(the two measure different things: the order of the pixels, and local structure):

- both at least :data:`ALIKE` (0.6): the pictures barely change: they show the architecture
  (and the method) more than what was learned;
- both at most :data:`UNALIKE` (0.3): they change completely: they show what was learned;
- otherwise: they change in part: they show both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

ALIKE = 0.6
UNALIKE = 0.3


@dataclass(frozen=True)
class Similarity:
    """Trained against randomised projections of a sample: Spearman's and SSIM's mean and
    standard deviation over ``n`` pairs; ``empty`` randomised projections were all zero."""

    spearman: float
    spearman_std: float
    ssim: float
    ssim_std: float
    n: int
    empty: int


@dataclass(frozen=True)
class CascadePoint:
    """One step of the cascade: randomised from the top down to module ``randomised_from``
    (which computes the analysed layer ``randomised_label``, '' below every one)."""

    step: int
    randomised_from: str
    randomised_label: str
    full: bool
    similarity: Similarity


@dataclass(frozen=True)
class InputDependence:
    """A layer's and method's mean correlation of each unit's projections with each other,
    and with their own patches' local contrast, over ``n`` units (with standard deviations)."""

    between_projections: float
    between_projections_std: float
    with_patches: float
    with_patches_std: float
    n: int


@dataclass(frozen=True)
class SanityFigures:
    """Every figure of a run's sanity stage, by (layer label, method)."""

    layers: tuple[str, ...]
    methods: tuple[str, ...]
    headline: dict[tuple[str, str], Similarity]
    cascade: dict[tuple[str, str], tuple[CascadePoint, ...]]
    inputs: dict[tuple[str, str], InputDependence]


def read_sanity(table: Path, input_dependence: Path) -> SanityFigures:
    """The figures of ``sanity.parquet`` (``table``) and ``input_dependence.parquet``."""
    rows = pd.read_parquet(table)
    layers = tuple(dict.fromkeys(str(v) for v in rows["layer"]))
    methods = tuple(dict.fromkeys(str(v) for v in rows["method"]))
    cascade: dict[tuple[str, str], tuple[CascadePoint, ...]] = {}
    headline: dict[tuple[str, str], Similarity] = {}
    for (layer, method), part in rows.groupby(["layer", "method"], sort=False):
        points = tuple(CascadePoint(int(r.step), str(r.randomised_from), str(r.randomised_label),
                                    bool(r.full), _similarity(r))
                       for r in part.sort_values("step").itertuples(index=False))
        cascade[(str(layer), str(method))] = points
        full = [point.similarity for point in points if point.full]
        if full:
            headline[(str(layer), str(method))] = full[0]
    inputs = {(str(r.layer), str(r.method)): InputDependence(
        float(r.between_projections), float(r.between_projections_std), float(r.with_patches),
        float(r.with_patches_std), int(r.n))
        for r in pd.read_parquet(input_dependence).itertuples(index=False)}
    return SanityFigures(layers, methods, headline, cascade, inputs)


def _similarity(row: Any) -> Similarity:  # an ``itertuples`` row of ``sanity.parquet``
    return Similarity(float(row.spearman_mean), float(row.spearman_std), float(row.ssim_mean),
                      float(row.ssim_std), int(row.n), int(row.empty))


def reading(layer_label: str, figures: SanityFigures, method: str | None = None) -> str:
    """One plain sentence on how much ``method``'s projections of layer ``layer_label`` (by
    default the first method, the atlas's main one) change when every weight is randomised
    (module doc for the thresholds)."""
    method = method or figures.methods[0]
    found = figures.headline.get((layer_label, method))
    if found is None:
        return f"{layer_label}: no sanity check of {method} projections was run."
    if found.n == 0 or math.isnan(found.spearman):
        return (f"{layer_label}: with randomised weights, {method} projections of the "
                f"sampled activations come out empty, so nothing of them can be compared.")
    figures_text = f"(Spearman {found.spearman:.2f}, SSIM {found.ssim:.2f}"
    if found.empty:
        # left out of the means: nothing comes back through the randomised network there,
        # which is itself the largest possible change
        figures_text += f"; {found.empty} of {found.n + found.empty} came out empty"
    figures_text += ")"
    if min(found.spearman, found.ssim) >= ALIKE:
        return (f"{layer_label}: {method} projections barely change when the weights are "
                f"randomised {figures_text}: they show the architecture more than what was "
                f"learned.")
    if max(found.spearman, found.ssim) <= UNALIKE:
        return (f"{layer_label}: {method} projections change completely when the weights are "
                f"randomised {figures_text}: they depend on the learned weights (necessary, "
                f"not sufficient, for showing what the network learned).")
    return (f"{layer_label}: {method} projections change in part when the weights are "
            f"randomised {figures_text}: they show the architecture as well as the learned "
            f"weights.")
