"""Packages whose names are imported from their modules on first use, not with the package.

Importing a submodule runs its package's ``__init__`` first, so a package that imports its
heavy modules there makes every light one heavy too: the atlas's worker processes read a
projection record (:mod:`pipeline.interp.projection_meta`) and a class prior
(:mod:`pipeline.ranking.picks`), and with them imported torch, torchvision and dask, 3-4 s of
CPU per worker at the start of every render.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from its submodule
    ``modules[name]`` when first asked for, and keeps it in the package."""
    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{modules[name]}"), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return __getattr__
