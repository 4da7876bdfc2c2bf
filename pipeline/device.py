"""Choosing the torch device from a workflow's ``device`` option."""

from __future__ import annotations

import torch

from pipeline.errors import UserError


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be a valid torch device."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"device '{spec}' is not a torch device; use 'auto', 'cpu' or 'cuda'"
                        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{spec}' asked for, but CUDA is not available; "
                        "use 'auto' or 'cpu'")
    return device
