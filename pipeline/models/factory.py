"""The user's own model: ``[model] factory = "my_models.py:build"`` (or ``package.module:build``).

The function is called with ``[model.factory_args]`` as keyword arguments, plus ``num_classes``
(the data's class count) when it takes that argument and the workflow does not set it, and must
return an ``nn.Module``. Nothing of the user's goes into this package: the file is imported
from where it is, so every process that builds the model (a ``--shard`` process, a dask worker)
builds the same one. Its content is part of the key of every stage that builds the model (see
:func:`factory_digest`): editing it reruns them, touching it does not.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipeline.config_checks import FACTORY_FORMAT, factory_is_file, factory_parts
from pipeline.errors import UserError, one_line

if TYPE_CHECKING:
    from torch import nn


def split_factory(factory: str) -> tuple[str, str]:
    """(the file or module, the function) of ``"file.py:function"`` / ``"pkg.mod:function"``."""
    parts = factory_parts(factory)
    if parts is None:
        raise UserError(f"[model] factory '{factory}': {FACTORY_FORMAT}")
    return parts


class FactoryError(UserError):
    """The user's factory failed: the build is retried on the CPU before it is blamed (a
    function may need real tensors, not the meta device preflight builds on)."""


def factory_source(factory: str) -> Path | None:
    """The source file that defines the factory (the named file, or the module's file), or
    None when a module cannot be found."""
    where, _ = split_factory(factory)
    if factory_is_file(where):
        return Path(where).expanduser().absolute()
    try:
        spec = importlib.util.find_spec(where)
    except Exception:  # noqa: BLE001 - a package's __init__ may raise anything: no source
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def factory_digest(factory: str) -> str | None:
    """The sha256 of the factory's source file, or None when it cannot be read."""
    path = factory_source(factory)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def _import(where: str, factory: str) -> ModuleType:
    if not factory_is_file(where):
        try:
            return importlib.import_module(where)
        except Exception as error:  # noqa: BLE001 - any import failure is the user's module's
            raise UserError(f"[model] factory '{factory}': cannot import module '{where}' "
                            f"({one_line(error)}); check the name and that it is importable "
                            "(on PYTHONPATH or installed)") from None
    path = Path(where).expanduser().absolute()
    if not path.is_file():
        raise UserError(f"{path}: model file not found (from [model] factory '{factory}'); "
                        "paths are relative to the current folder")
    # named by place and content: a long-lived process (a dask worker) imports an edited file
    # anew instead of building the old model
    digest = hashlib.sha256(str(path).encode() + b"\0" + path.read_bytes()).hexdigest()[:16]
    name = f"deconv_atlas_factory_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # a suffix Python does not import (not .py)
        raise UserError(f"{path}: not a Python file (from [model] factory '{factory}'); "
                        "name a .py file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:  # its own helper modules import as they would beside it
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = module  # classes defined there pickle and unpickle by this name
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - anything the file raises is the user's
        del sys.modules[name]
        raise UserError(f"{path}: cannot import the model file ({one_line(error)}); fix the "
                        f"file named by [model] factory '{factory}'") from None
    return module


def build_from_factory(factory: str, args: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The ``nn.Module`` the factory returns; every failure is one line naming the file (or
    module), the function and the error."""
    from torch import nn

    where, function = split_factory(factory)
    module = _import(where, factory)
    shown = str(Path(where).expanduser().absolute()) if factory_is_file(where) else where
    build = getattr(module, function, None)
    if not callable(build):
        defined = sorted(name for name, value in vars(module).items()
                         if inspect.isfunction(value) and value.__module__ == module.__name__)
        raise UserError(f"{shown}: has no function '{function}' (from [model] factory); "
                        f"functions defined there: {', '.join(defined) or 'none'}")
    kwargs = dict(args)
    parameters = _parameters(build)
    if "num_classes" not in kwargs and ("num_classes" in parameters or any(
            p.kind is p.VAR_KEYWORD for p in parameters.values())):
        kwargs["num_classes"] = num_classes
    try:
        model = build(**kwargs)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's function may raise anything
        raise FactoryError(f"{shown}: {function}({_shown_args(kwargs)}) raised "
                        f"{one_line(error)}; fix the function or [model.factory_args]") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{shown}: {function}() returned a {type(model).__name__}, not a "
                        "torch.nn.Module; return the network itself")
    return model


def _parameters(function: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


def _shown_args(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
