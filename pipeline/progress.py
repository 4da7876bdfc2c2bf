"""Progress bars for every long step, in one place so that all stages look alike.

``tqdm.std``, not ``tqdm.auto``: the latter (tqdm's asyncio class) calls ``iter()`` on what it
wraps when it is made and never uses that iterator. For a DataLoader with workers that starts
a whole second pool of worker processes, which decodes batches nobody reads while the real
pool competes with it for the cores (the activations stage's loss against a bare loop).
"""

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm.std import tqdm

from pipeline.atomic import read_json, write_json

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


# -- block progress of a resumable store (deconv's projections, featurevis) ------------------
# A store written a block of units at a time keeps ``progress/<label>.json`` beside its zarr
# tree: how many units of the layer (from the first) are written, and with which batch size.


def units_written(store: Path, label: str) -> int:
    """How many units of layer ``label`` (from the first) a previous run finished."""
    return int((read_json(store / "progress" / f"{label}.json") or {}).get("units", 0))


def record_units(store: Path, label: str, units: int, batch_size: int) -> None:
    """Record that the first ``units`` of layer ``label`` are written (atomically)."""
    write_json(store / "progress" / f"{label}.json", {"units": units, "batch_size": batch_size})


def batch_sizes_written(store: Path) -> set[int]:
    """The batch sizes of the blocks already written (empty: none yet)."""
    folder = store / "progress"
    return {int(read_json(record)["batch_size"]) for record in folder.glob("*.json")} \
        if folder.is_dir() else set()
