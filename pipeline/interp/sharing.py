"""Which projection requests can share one forward pass, and what a batch of them costs.

Requests on identical inputs (the same image, or the same crop of it) need one forward pass
between them; each then still needs its own backward pass. A forward on the unique inputs plus
one backward per "round" (the r-th request of every input) replaces one forward + backward per
request. Costs are counted in image passes, assuming a forward and a backward cost the same per
image; the projector uses the same count to decide between sharing or not, and (with the crop
areas) between full-image and cropped projection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor


def identical(images: Tensor) -> tuple[list[int], list[int]]:
    """(group of each image, first image of each group): images are grouped when equal."""
    n = images.shape[0]
    flat = images.reshape(n, -1)
    # float64 where the device has it (Apple's MPS has not): the fingerprint only narrows the
    # search, so a coarser one costs comparisons, never a wrong group
    dtype = torch.float32 if flat.device.type == "mps" else torch.float64
    probe = torch.linspace(-1.0, 1.0, flat.shape[1], dtype=dtype, device=flat.device)
    keys = (flat.to(dtype) @ probe).tolist() if n > 1 else [0.0] * n  # cheap fingerprint
    buckets: dict[float, list[int]] = {}
    reps: list[int] = []
    inverse = [0] * n
    for i, key in enumerate(keys):
        members = buckets.setdefault(key, [])
        for g in members:
            if torch.equal(flat[reps[g]], flat[i]):  # the fingerprint only narrows the search
                inverse[i] = g
                break
        else:
            members.append(len(reps))
            inverse[i] = len(reps)
            reps.append(i)
    return inverse, reps


def passes(keys: Sequence[Hashable], batch_size: int) -> int:
    """Image passes spent on requests whose inputs are identical iff their keys are equal,
    processed in chunks of `batch_size`, sharing a forward wherever `share` would."""
    total = 0
    for start in range(0, len(keys), batch_size):
        part = keys[start:start + batch_size]
        counts = Counter(part)
        total += min(2 * len(part), len(counts) * (1 + max(counts.values())))
    return total


def share(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Group identical images: (base images, request -> base index, request's round).

    When sharing does not pay (see the module doc), every request is its own base.
    """
    n = images.shape[0]
    plain = (images, torch.arange(n, device=images.device),
             torch.zeros(n, dtype=torch.long, device=images.device))
    if n < 2:
        return plain
    inverse, reps = identical(images)
    seen = [0] * len(reps)
    rounds = [0] * n
    for i, g in enumerate(inverse):
        rounds[i], seen[g] = seen[g], seen[g] + 1
    if len(reps) * (1 + max(seen)) >= 2 * n:
        return plain
    dev = images.device
    return images[reps], torch.tensor(inverse, device=dev), torch.tensor(rounds, device=dev)
