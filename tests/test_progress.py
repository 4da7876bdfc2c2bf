"""Progress bars ask what they wrap for one iterator: a DataLoader with workers must not start
a second, unused pool of worker processes (it competed with the real one for the cores)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.progress import progress


class Counted:
    """An iterable that counts the iterators asked of it."""

    def __init__(self, items: list[int]) -> None:
        self.items, self.iterators = items, 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        self.iterators += 1
        return iter(self.items)


class Squares(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(i * i)


def test_progress_asks_for_one_iterator():
    items = Counted([1, 2, 3])
    assert list(progress(items, "counting")) == [1, 2, 3]
    assert items.iterators == 1


def test_a_loader_with_workers_runs_one_pool_under_a_progress_bar():
    loader = DataLoader(Squares(), batch_size=4, num_workers=1)
    seeds = torch.get_rng_state()
    batches = list(progress(loader, "loading", unit="batch"))
    assert [b.tolist() for b in batches] == [[0, 1, 4, 9], [16, 25, 36, 49]]
    # one loader iterator draws one base seed from torch's generator; two drew two
    torch.set_rng_state(seeds)
    torch.empty((), dtype=torch.int64).random_()
    expected_next = torch.rand(1)
    torch.set_rng_state(seeds)
    list(progress(loader, "loading", unit="batch"))
    assert torch.equal(torch.rand(1), expected_next)
