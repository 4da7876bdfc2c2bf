"""Choosing the torch device from a workflow's ``device`` option.

Two checks, apart: :func:`parse_device` says whether a value is a device at all (any machine
can tell, so preflight asks it of every ``device`` option), :func:`check_available` whether
this machine has it (asked only where a stage is about to run on it: a finished run's
``cuda`` must not be refused on a laptop that runs nothing).
"""

from __future__ import annotations

import torch

from pipeline.errors import UserError

#: What a ``device`` option may be, for the messages that refuse another value.
DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def parse_device(spec: str) -> torch.device | None:
    """``spec`` as a torch device, None for ``auto``; a :class:`UserError` (``device '...'
    ...``, without the option's name) when it is no device to compute on. Spelling only: it
    does not ask whether this machine has the device."""
    if spec == "auto":
        return None
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"device '{spec}' is not a torch device; use {DEVICE_CHOICES}"
                        ) from None
    if device.type == "meta":  # a device of shapes: a stage's results would hold no numbers
        raise UserError(f"device '{spec}' holds shapes, not data, so no stage can compute on "
                        f"it; use {DEVICE_CHOICES}")
    return device


def check_available(spec: str) -> None:
    """Refuse (``UserError``) a ``device`` value this machine cannot run on: CUDA or MPS that is
    not there, a CUDA index past the last GPU. ``auto`` always finds a device."""
    device = parse_device(spec)
    if device is None:
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{spec}' asked for, but CUDA is not available; "
                            "use 'auto' or 'cpu'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"device '{spec}' asked for, but this machine has {count} CUDA "
                            f"device(s); use 'cuda' or 'cuda:N' with N below {count}")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"device '{spec}' asked for, but MPS (Apple GPU) is not available; "
                        "use 'auto' or 'cpu'")


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be a valid torch device
    that this machine has."""
    device = parse_device(spec)
    if device is not None:
        check_available(spec)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())
