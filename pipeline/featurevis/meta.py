"""The attributes of ``featurevis.zarr`` (see :mod:`pipeline.featurevis.store`), each a
:class:`~pipeline.metadata.Metadata` record.

Kept apart from the writer, as the projections' records are: the atlas reads the records, not
the optimisation machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.metadata import Metadata


@dataclass(frozen=True)
class FeatureVisMeta(Metadata):
    """The root's attributes: how the images were optimised (Adam ``steps`` of size ``lr``
    from images drawn with ``seed``), the network input's side, the objectives in the order
    of the ``objective`` dimension, and the device."""

    steps: int
    lr: float
    seed: int
    input_size: int
    objectives: tuple[str, ...]
    device: str


@dataclass(frozen=True)
class FeatureVisPlan(Metadata):
    """What a store being written was created for (set last, removed when finished): a
    killed run's store is continued only under the same plan."""

    steps: int
    lr: float
    seed: int
    input_size: int
    channels: int
    layers: tuple[str, ...]
    units: tuple[int, ...]  # units optimised per layer, in the order of ``layers``


@dataclass(frozen=True)
class FeatureVisLayer(Metadata):
    """A layer group's attributes: its module; for the centre objective, the side of its
    input (the receptive field's, at most the network's input) and the map cell optimised
    (the one whose field is centred on that input); the receptive field's size."""

    module: str
    side: int
    position: tuple[int, int]
    receptive_field: tuple[int, int]
