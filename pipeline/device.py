"""Choosing the torch device from a workflow's ``device`` option.

What a stage computes with is chosen here too (:func:`compute_on`): the device, whether CUDA may
use TF32 for float32 convolutions and matrix products (PyTorch lets cuDNN do so by default,
which moves results about 1e-3 from a CPU run; here it is off unless a workflow asks), and
whether CUDA must pick deterministic algorithms. A stage records the :class:`Compute` it ran
with in its stamp, and ``status`` and the atlas's run card show it.

Two checks, apart: :func:`parse_device` says whether a value is a device at all (any machine
can tell, so preflight asks it of every ``device`` option), :func:`check_available` whether
this machine has it (asked only where a stage is about to run on it: a finished run's
``cuda`` must not be refused on a laptop that runs nothing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.utils.deterministic

from pipeline.errors import UserError

# cuBLAS is deterministic only with a fixed workspace, set before its first use in the process
# (a stage that asks for determinism may run after one that did not): 8 buffers of 4 MiB.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

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


@dataclass(frozen=True)
class Compute:
    """What a stage computed with: the device, the arithmetic of its float32 work
    (``float32``, or ``tf32`` where a workflow allowed it on CUDA), whether its convolutions ran
    in bfloat16 autocast, and whether CUDA was held to deterministic algorithms."""

    device: str
    precision: str
    bf16: bool = False
    deterministic: bool = False

    def describe(self) -> str:
        """``cuda:0, float32`` / ``cpu, float32, bf16 autocast`` / ``cuda, tf32, deterministic``."""
        parts = [self.device, self.precision]
        if self.bf16:
            parts.append("bf16 autocast")
        if self.deterministic:
            parts.append("deterministic")
        return ", ".join(parts)

    def to_json(self) -> dict[str, object]:
        """The record as a stamp holds it."""
        return {"device": self.device, "precision": self.precision, "bf16": self.bf16,
                "deterministic": self.deterministic}

    @classmethod
    def from_json(cls, value: dict) -> Compute:
        """The record a stamp holds."""
        return cls(str(value["device"]), str(value["precision"]), bool(value.get("bf16")),
                   bool(value.get("deterministic")))


#: Devices whose autocast takes bfloat16 (MPS's does not on every torch this package takes).
BF16_AUTOCAST = ("cuda", "cpu")

_deterministic_set = False  # whether compute_on turned deterministic algorithms on


def compute_on(spec: str, tf32: bool = False, deterministic: bool = False,
               bf16: bool = False) -> tuple[torch.device, Compute]:
    """Resolve ``spec`` (see :func:`resolve_device`) and set torch's process-wide arithmetic for
    it: TF32 for float32 convolutions and matrix products only with ``tf32`` (it matters on
    CUDA alone), and on CUDA, with ``deterministic``, deterministic algorithms (cuDNN's, and
    torch's where it has them: an op without one warns rather than fails). Every stage that
    computes on a device calls it first, so none inherits what the previous one in the process
    chose; deterministic algorithms a caller of this package turned on are left on. ``bf16``:
    the stage asks for bfloat16 autocast, recorded where the device has it (BF16_AUTOCAST)."""
    global _deterministic_set
    device = resolve_device(spec)
    if device.type == "cuda":
        if device.index is not None:
            # the current device: pinned host memory (DataLoader pin_memory) and kernels
            # launched without an explicit device go to this GPU, not to GPU 0
            torch.cuda.set_device(device)
        device = torch.device("cuda", torch.cuda.current_device())  # the record says which
    set_tf32(tf32)
    exact = deterministic and device.type == "cuda"
    if exact or _deterministic_set:
        torch.backends.cudnn.deterministic = exact
        if exact:
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(exact, warn_only=True)
        # deterministic mode also fills every new tensor's memory (to expose reads of it): a
        # cost on each allocation that buys nothing here
        setattr(torch.utils.deterministic, "fill_uninitialized_memory", not exact)  # noqa: B010
        _deterministic_set = exact
    precision = "tf32" if tf32 and device.type == "cuda" else "float32"
    return device, Compute(str(device), precision, bf16 and device.type in BF16_AUTOCAST, exact)


def set_tf32(allowed: bool) -> None:
    """Let (or forbid) CUDA's float32 convolutions and matrix products run in TF32. Through
    the ``allow_tf32`` flags, which every torch since 1.7 reads the same way: torch 2.9's
    per-backend ``fp32_precision`` settings, mixed with them, make the flags unreadable."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


def tf32_allowed() -> bool:
    """Whether CUDA's float32 convolutions may run in TF32 now."""
    return bool(torch.backends.cudnn.allow_tf32)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device (or the CPU's allocator) running out of memory: never a
    reason to fall back to a path that needs more, and said to the user as a batch size to
    lower (see the runner)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):  # torch.OutOfMemoryError, any device
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text)
