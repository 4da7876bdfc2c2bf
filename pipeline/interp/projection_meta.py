"""The attributes of ``projections.zarr`` (see :mod:`pipeline.interp.projection_store`), each
a :class:`~pipeline.metadata.Metadata` record (``to_attrs`` / ``from_attrs``).

Kept apart from the store's writer: its readers (the atlas, ``compare``) need the records, not
the projection machinery. The pipeline always writes them: they are read without defaults, and
a store lacking one is from an older deconv revision, stale anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.metadata import Metadata


@dataclass(frozen=True)
class ProjectionPlan(Metadata):
    """What a store being written was created for: a killed run's store is continued only
    with the same plan (it is set last, so a store cut off while created is redone)."""

    methods: tuple[str, ...]
    top_k: int
    image_size: int
    layers: tuple[str, ...]


@dataclass(frozen=True)
class ProjectionsMeta(Metadata):
    """The root's attributes: the projection methods (the first is the atlas's main one), the
    side of the network's input in px, and the device the projections were computed on."""

    methods: tuple[str, ...]
    image_size: int
    device: str


@dataclass(frozen=True)
class ProjectedLayer(Metadata):
    """A layer group's attributes: its module, the projections' tile (h, w), the receptive
    field's size, the methods, and the input area its activation maps cover (top, left,
    bottom, right in input px, see ``pipeline.interp.maps``)."""

    module: str
    tile: tuple[int, int]
    receptive_field: tuple[int, int]
    methods: tuple[str, ...]
    map_extent: tuple[float, ...]
