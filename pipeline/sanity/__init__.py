"""Sanity checks of the projections, after Adebayo et al., "Sanity Checks for Saliency Maps"
(NeurIPS 2018): how much a picture changes when the network's weights are randomised (the
cascade, :mod:`pipeline.sanity.sanity_run`), and how much it follows its own image
(:mod:`pipeline.sanity.inputs`). The atlas reads the results through
:func:`read_sanity`, :func:`reading` and :class:`RandomisedProjections`.
"""

from pipeline.sanity.figures import (
    CascadePoint,
    InputDependence,
    SanityFigures,
    Similarity,
    read_sanity,
    reading,
)
from pipeline.sanity.store import RandomisedProjections, SanityMeta

__all__ = ["CascadePoint", "InputDependence", "RandomisedProjections", "SanityFigures",
           "SanityMeta", "Similarity", "read_sanity", "reading"]
