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

SAMPLE = 61  # the fingerprint reads every SAMPLE-th value of an image (a prime: no grid aligns)


def identical(images: Tensor) -> tuple[list[int], list[int]]:
    """(group of each image, first image of each group): images are grouped when equal.

    Two waits for the device, whatever the number of images: one for a fingerprint of each
    (a weighted sum of every ``SAMPLE``-th value: a few milliseconds for 64 images of 224 px),
    one to confirm at once that every image equals the first with its fingerprint. Only when
    two different images share a fingerprint are they compared one by one."""
    n = images.shape[0]
    if n < 2:
        return [0] * n, list(range(n))
    flat = images.reshape(n, -1)
    # float64 where the device has it (Apple's MPS has not): the fingerprint only narrows the
    # search, so a coarser one costs comparisons, never a wrong group. A row's own sum, not a
    # matrix-vector product: BLAS may sum equal rows differently by their place in the batch
    dtype = torch.float32 if flat.device.type == "mps" else torch.float64
    sample = flat[:, ::SAMPLE].to(dtype)
    probe = torch.linspace(-1.0, 1.0, sample.shape[1], dtype=dtype, device=flat.device)
    keys = (sample * probe).sum(dim=1).tolist()
    first: dict[float, int] = {}
    candidate = [first.setdefault(key, i) for i, key in enumerate(keys)]
    copies = [i for i, c in enumerate(candidate) if c != i]
    if not copies or torch.equal(flat[copies], flat[[candidate[i] for i in copies]]):
        reps = list(first.values())
        group = {rep: g for g, rep in enumerate(reps)}
        return [group[c] for c in candidate], reps
    return _compared(flat, keys)


def _compared(flat: Tensor, keys: list[float]) -> tuple[list[int], list[int]]:
    """:func:`identical` where fingerprints collide: each image compared with the groups of
    its fingerprint in turn."""
    buckets: dict[float, list[int]] = {}
    reps: list[int] = []
    inverse = [0] * len(keys)
    for i, key in enumerate(keys):
        members = buckets.setdefault(key, [])
        for g in members:
            if torch.equal(flat[reps[g]], flat[i]):
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
