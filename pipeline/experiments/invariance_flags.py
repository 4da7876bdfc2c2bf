"""Curves of Figure 5 whose image's label may not survive the transform.

Excluding classes (:mod:`pipeline.experiments.invariance_sampling`) needs someone to know which
classes a transform changes. For the rest, the page flags a curve by what the model itself says:

    A curve (one image, one transform) is flagged when, at ``STABLE`` or more neighbouring
    amounts, the model names the same other class (not the true class, and not what it
    predicted for the untransformed image) with probability at least ``CONFIDENT``.

An antidiagonal-stripes image rotated by 80-100 degrees that the model confidently calls
"diagonal stripes" is flagged: its drop in P(true class) may be the label changing, not the
features failing. A model that is merely unsure (probability spread over classes) or that
flickers between classes from one amount to the next is not flagged: that is what the chart is
meant to show. The flag says "may": a confident, stable wrong answer is also what a
non-invariant network gives, and only a reader who looks at the copies can tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: the other class's probability that counts as "confidently names"
CONFIDENT = 0.6
#: neighbouring amounts at which the model must name the same other class ("stable")
STABLE = 2
IDENTITY = {"translation": 0.0, "scale": 1.0, "rotation": 0.0}


@dataclass(frozen=True)
class LabelFlag:
    """One flagged curve: from ``low`` to ``high`` (amounts, the longest such run) the model
    named ``other`` (a class label) with probability up to ``prob``."""

    image_id: int
    transform: str
    other: int
    low: float
    high: float
    prob: float
    steps: int  # amounts in that run


def label_flags(rows: pd.DataFrame, confident: float = CONFIDENT,
                stable: int = STABLE) -> list[LabelFlag]:
    """The flagged curves of ``rows`` (``invariance.parquet``'s columns), by the module's rule;
    at most one flag per image and transform: its longest run, then the most confident."""
    flags = []
    for (image_id, transform), curve in rows.groupby(["image_id", "transform"], sort=False):
        curve = curve.sort_values("amount")
        identity = curve[curve["amount"] == IDENTITY.get(str(transform), 0.0)]
        label = int(curve["label"].iloc[0])
        original = int(identity["predicted"].iloc[0]) if len(identity) else label
        best: LabelFlag | None = None
        run: list[tuple[float, int, float]] = []
        for amount, predicted, prob in zip(curve["amount"], curve["predicted"],
                                           curve["predicted_prob"], strict=True):
            predicted = int(predicted)
            other = predicted not in (label, original) and prob >= confident
            if other and run and run[-1][1] == predicted:
                run.append((float(amount), predicted, float(prob)))
            else:
                run = [(float(amount), predicted, float(prob))] if other else []
            if len(run) >= stable:
                flag = LabelFlag(int(image_id), str(transform), run[0][1], run[0][0], run[-1][0],
                                 max(p for _, _, p in run), len(run))
                if best is None or (flag.steps, flag.prob) > (best.steps, best.prob):
                    best = flag
        if best is not None:
            flags.append(best)
    return flags
