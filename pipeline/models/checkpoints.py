"""Weights files as people save them, read without running code from them.

A plain state dict; a training checkpoint with the weights under ``"state_dict"`` (Lightning),
``"model"``, ``"model_state_dict"`` or ``"net"``; an EMA copy (``state_dict_ema``, ``model_ema``,
...) only when ``[model] checkpoint_key`` asks for it; a ``.safetensors`` file. Wrapper prefixes
(Lightning's ``model.``/``net.``, DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``, in any
combination) are found by matching the file's names against the model's, so the weights load
as they were saved. A whole pickled module (``torch.save(model)``) is refused unless
``[model] trust_pickle`` allows it, since unpickling it runs code from the file; a TorchScript
archive is refused with how to get a state dict from it.
"""

from __future__ import annotations

import argparse
import contextlib
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError, one_line

#: Entries that hold a training checkpoint's weights, in the order they are tried.
WEIGHT_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")


@dataclass(frozen=True)
class Checkpoint:
    """The state dict read from a weights file and where in the file it was."""

    state: dict[str, Any]
    path: Path
    key: str = ""  # the entry of the file's dict that held it; "" for a bare state dict

    def where(self) -> str:
        """How the run's log and the model card name the entry."""
        return f"{self.path.name}, entry '{self.key}'" if self.key else self.path.name


def read_checkpoint(path: Path, source: str, option: str = "[model] checkpoint",
                    key: str = "", trust_pickle: bool = False) -> Checkpoint:
    """The weights in ``path`` (see the module doc); every refusal is one line that names the
    file and the option to change. Memory-mapped where the format allows, so checking is
    cheap."""
    if not path.is_file():
        raise UserError(f"{path}: model weights not found; check {option} in {source}")
    content = _load(path, option, trust_pickle)
    if not key and isinstance(content, Mapping):  # a training checkpoint's weights first: it
        for name in WEIGHT_KEYS:  # may hold a tensor of its own beside them (best_acc1)
            if _is_state_dict(content.get(name)):
                return Checkpoint(dict(content[name]), path, name)
    if _is_state_dict(content) and not key:
        return Checkpoint(content, path)
    if not isinstance(content, Mapping):
        raise UserError(f"{path}: holds a {type(content).__name__}, not a state dict; save "
                        f"torch.save(model.state_dict(), path) and point {option} at it")
    if key:
        if not _is_state_dict(content.get(key)):
            entries = [name for name, value in content.items() if _is_state_dict(value)]
            raise UserError(f"{path}: has no state dict under '{key}' ([model] checkpoint_key); "
                            f"its state dicts are under: {', '.join(map(str, entries)) or 'none'}")
        return Checkpoint(dict(content[key]), path, key)
    entries = [str(name) for name, value in content.items() if _is_state_dict(value)]
    hint = (f"set [model] checkpoint_key to one of: {', '.join(entries)}" if entries else
            "save torch.save(model.state_dict(), path)")
    raise UserError(f"{path}: no weights under {', '.join(repr(k) for k in WEIGHT_KEYS)}; "
                    f"{hint}")


def _is_state_dict(value: Any) -> bool:
    import torch

    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(name, str) for name in value)
            and any(isinstance(tensor, torch.Tensor) for tensor in value.values()))


def _load(path: Path, option: str, trust_pickle: bool) -> Any:
    if path.suffix == ".safetensors":
        return _load_safetensors(path, option)
    import torch

    if _is_torchscript(path):
        raise UserError(f"{path}: a TorchScript file, and the deconvnet needs the Python model "
                        "(its rectifiers and pooling); save its weights with `torch.save("
                        "torch.jit.load(path).state_dict(), 'weights.pt')` and give that as "
                        f"{option}, with the model's [model] name or factory")
    try:  # the training scripts of torchvision and timm keep their arguments as a Namespace:
        # plain attributes, safe to rebuild
        allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:  # the legacy (non-zip) format cannot be mmapped
                if "mmap" not in str(error):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler raises anything on a foreign file
        if "Weights only load failed" in str(error):
            if trust_pickle:
                return _load_pickle(path, option)
            raise UserError(f"{path}: holds pickled Python objects ({_globals(path)}), e.g. a "
                            "whole model saved with torch.save(model); loading it runs code "
                            "from the file, so it is refused; save torch.save(model.state_dict()"
                            ", path) instead, or set [model] trust_pickle = true for a file you "
                            "trust") from None
        raise UserError(f"{path}: not a PyTorch weights file ({one_line(error, 100)}); set "
                        f"{option} to a file saved with torch.save(model.state_dict(), path) or a "
                        ".safetensors file") from None


def _load_pickle(path: Path, option: str) -> Any:
    """A file the user trusts: unpickled in full; a whole module gives its state dict."""
    import torch
    from torch import nn

    try:
        content = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - missing classes, corrupt files, ...
        raise UserError(f"{path}: cannot be unpickled ({one_line(error, 100)}); the classes it "
                        "holds must be importable here, or save a state dict instead") from None
    return content.state_dict() if isinstance(content, nn.Module) else content


def _load_safetensors(path: Path, option: str) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(f"{path}: reading .safetensors files needs the safetensors package; "
                        "install it with `pip install -e \".[safetensors]\"`") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # noqa: BLE001 - safetensors raises its own errors on bad files
        raise UserError(f"{path}: not a readable .safetensors file ({one_line(error, 100)}); "
                        f"check {option}") from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or name == "constants.pkl"
                       for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _globals(path: Path) -> str:
    """The classes the file would need to unpickle, as torch lists them."""
    try:
        from torch.serialization import get_unsafe_globals_in_checkpoint

        found = sorted(get_unsafe_globals_in_checkpoint(str(path)))  # a set's order varies
    except Exception:  # noqa: BLE001 - older torch, or a file it cannot list
        return "not tensors"
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return shown or "not tensors"



def strip_prefix(state: Mapping[str, Any], wanted: Collection[str]) -> tuple[dict, str, int]:
    """(``state`` with the wrapper prefix taken off its names, the prefix, how many entries
    without it were left out). The prefix is the one of at most three leading name parts
    (``module.``, ``model._orig_mod.``, ...) under which most of the model's names ``wanted``
    are found; "" when the names match as they are. A ``ValueError`` when two prefixes hold
    the model's names alike (a teacher and a student)."""
    wanted = set(wanted)
    counts: dict[str, int] = {}
    for name in state:
        parts = name.split(".")
        for depth in range(1, min(4, len(parts))):
            prefix = ".".join(parts[:depth]) + "."
            if name[len(prefix):] in wanted:
                counts[prefix] = counts.get(prefix, 0) + 1
    plain = sum(1 for name in state if name in wanted)
    best = max(counts, key=lambda p: (counts[p], -len(p)), default="")
    if not best or counts[best] <= plain:
        return dict(state), "", 0
    tied = sorted(p for p in counts if counts[p] == counts[best] and len(p) == len(best))
    if len(tied) > 1:  # two models in one file (teacher and student): the user must say
        raise ValueError(f"the model's weights are found under {' and '.join(tied)} alike")
    kept = {name[len(best):]: value for name, value in state.items() if name.startswith(best)}
    return kept, best, len(state) - len(kept)


def describe(checkpoint: Checkpoint, prefix: str, dropped: int) -> str:
    """One line for the run's log and the model card: file, entry, prefix, what was left out."""
    text = checkpoint.where()
    if prefix:
        text += f", prefix '{prefix}' removed"
    if dropped:
        text += f" ({dropped} other entries left out)"
    return text
