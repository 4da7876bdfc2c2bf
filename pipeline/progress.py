"""Progress bars for every long step, in one place so that all stages look alike.

``tqdm.std``, not ``tqdm.auto``: the latter (tqdm's asyncio class) calls ``iter()`` on what it
wraps when it is made and never uses that iterator. For a DataLoader with workers that starts
a whole second pool of worker processes, which decodes batches nobody reads while the real
pool competes with it for the cores (the activations stage's loss against a bare loop).
"""

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.std import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None,
             unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on stderr labelled ``desc``."""
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, dynamic_ncols=True, leave=True))


def progress_bar(desc: str, total: int, unit: str = "it") -> tqdm:
    """A progress bar advanced by hand with ``update(n)``; close it when done."""
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


def finish_open_bars() -> None:
    """End every bar still open (a stage stopped by an error mid-loop), so that the error
    message that follows starts on a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
