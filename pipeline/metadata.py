"""Metadata records: the attributes a stage writes beside its arrays, as frozen dataclasses.

A record's fields are JSON values (str, int, float, and tuples of them, stored as lists), in
the order they are written. ``to_attrs`` gives the dict a zarr group's or a parquet file's
metadata holds; ``from_attrs`` reads it back, every field without a default required: the
pipeline always writes them, and a store without one is from an older revision of its stage,
stale anyway. A field added to a record later has a default, which a store written before it
reads as.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Self


class Metadata:
    """Mixin for a frozen dataclass of JSON values (see the module doc)."""

    def to_attrs(self) -> dict[str, Any]:
        return {spec.name: _json(getattr(self, spec.name))
                for spec in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        return cls(**{spec.name: _typed(hints[spec.name], attrs[spec.name])
                      for spec in dataclasses.fields(cls)  # type: ignore[arg-type]
                      if spec.name in attrs or (spec.default is dataclasses.MISSING and
                                                spec.default_factory is dataclasses.MISSING)})


def _json(value: Any) -> Any:
    return [_json(item) for item in value] if isinstance(value, tuple) else value


def _typed(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is tuple:  # tuple[int, int] or tuple[str, ...]: one item type
        return tuple(_typed(typing.get_args(hint)[0], item) for item in value)
    return hint(value)
