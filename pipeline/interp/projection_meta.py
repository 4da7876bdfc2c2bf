"""The attributes of ``projections.zarr`` (see :mod:`pipeline.interp.projection_store`), each
a frozen dataclass written with ``to_attrs`` and read with ``from_attrs``.

Kept apart from the store's writer so that readers (the atlas's render workers, ``compare``)
get them without importing torch. The pipeline always writes them: they are read without
defaults, and a store lacking one is from an older deconv revision, stale anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ProjectionPlan:
    """What a store being written was created for: a killed run's store is continued only
    with the same plan (it is set last, so a store cut off while created is redone)."""

    methods: tuple[str, ...]
    top_k: int
    image_size: int
    layers: tuple[str, ...]

    def to_attrs(self) -> dict[str, Any]:
        return {**asdict(self), "methods": list(self.methods), "layers": list(self.layers)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ProjectionPlan:
        return cls(tuple(attrs["methods"]), int(attrs["top_k"]), int(attrs["image_size"]),
                   tuple(attrs["layers"]))


@dataclass(frozen=True)
class ProjectionsMeta:
    """The root's attributes: the projection methods (the first is the atlas's main one), the
    side of the network's input in px, and the device the projections were computed on."""

    methods: tuple[str, ...]
    image_size: int
    device: str

    def to_attrs(self) -> dict[str, Any]:
        return {**asdict(self), "methods": list(self.methods)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ProjectionsMeta:
        return cls(tuple(str(method) for method in attrs["methods"]), int(attrs["image_size"]),
                   str(attrs["device"]))


@dataclass(frozen=True)
class ProjectedLayer:
    """A layer group's attributes: its module, the projections' tile (h, w), the receptive
    field's size, the methods, and the input area its activation maps cover."""

    module: str
    tile: tuple[int, int]
    receptive_field: tuple[int, int]
    methods: tuple[str, ...]
    map_extent: tuple[float, ...]

    def to_attrs(self) -> dict[str, Any]:
        return {"module": self.module, "tile": list(self.tile),
                "receptive_field": list(self.receptive_field), "methods": list(self.methods),
                "map_extent": list(self.map_extent)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ProjectedLayer:
        return cls(str(attrs["module"]), (int(attrs["tile"][0]), int(attrs["tile"][1])),
                   (int(attrs["receptive_field"][0]), int(attrs["receptive_field"][1])),
                   tuple(str(method) for method in attrs["methods"]),
                   tuple(attrs["map_extent"]))
