"""Time and peak memory of the rank stage against an in-memory numpy baseline, as N grows.

It generates an activations store like AlexNet's (5 layers, 64 + 192 + 384 + 256 + 256 = 1,152
units; per-image maxima drawn as rectified normals, with dead units, ties and a few unreadable
images) for the largest N, then stores for the smaller N made of hard links to its first chunks,
so only one store is written. For each N, each in a fresh process, it runs:

- the rank stage's computation (``rank_store``: top-k, statistics, quantile histograms, class
  selectivity; the tables written to parquet), on dask's local threaded scheduler;
- the baseline: each layer's whole ``[N, C]`` array loaded into memory and ``np.argpartition``
  for the top-k (nothing else), where twice the largest layer fits in half of the free memory.

It prints a table of seconds and peak resident memory, then how time and memory grew with N.

    python benchmarks/rank.py                                  # N = 50,000, 200,000, 1,281,167
    python benchmarks/rank.py --sizes 20000,100000 --keep scratch/rank-stores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAYERS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256}
CHUNK = 512  # the activations stage's default chunk_size
CLASSES = 1000


def generate(path: Path, n_images: int, seed: int = 0) -> None:
    """Write the largest store: every layer's ``max`` and the labels (argmax stays fill)."""
    from pipeline.inference.store import LayerMeta, create_store
    from pipeline.labelled import ImageCoords

    meta = [LayerMeta(label, label, channels, 13, 13, (99, 99))
            for label, channels in LAYERS.items()]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n_images, dtype=np.int32)
    store = create_store(path, ImageCoords.numbered(n_images, labels), CHUNK, meta, top=5)
    rows = 32 * CHUNK
    for start in range(0, n_images, rows):
        count = min(rows, n_images - start)
        for label, channels in LAYERS.items():
            values = rng.standard_normal((count, channels), dtype=np.float32)
            values *= np.linspace(0.5, 3.0, channels, dtype=np.float32)
            np.maximum(values, 0, out=values)
            values[:, :3] = 0  # dead units
            values[:, 3] = np.round(values[:, 3])  # ties
            values[(np.arange(count) + start) % 9973 == 0] = np.nan  # unreadable images
            store[f"{label}/max"][start:start + count] = values
        print(f"\r  generating {min(start + rows, n_images):,} of {n_images:,} images",
              end="", flush=True)
    print()


def linked_store(big: Path, path: Path, n_images: int) -> None:
    """A store of the first ``n_images`` images whose chunk files are hard links into ``big``."""
    import zarr

    from pipeline.inference.store import LayerMeta, create_store
    from pipeline.labelled import ImageCoords

    source_store = zarr.open_group(big, mode="r")
    meta = [LayerMeta.from_attrs(source_store[label].attrs) for label in LAYERS]
    create_store(path, ImageCoords.numbered(n_images, source_store["label"][:n_images]), CHUNK,
                 meta, top=5)  # the labels are a coordinate, written whole
    chunks = -(-n_images // CHUNK)
    for key in [f"{label}/max" for label in LAYERS]:
        for chunk in range(chunks):
            name = f"c/{chunk}/0"
            source, target = big / key / name, path / key / name
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)


def child(kind: str, store: Path, k: int) -> None:
    """Run one measurement in this process and print it as JSON."""
    import zarr

    start = time.perf_counter()
    if kind == "rank":
        from pipeline.ranking import rank_store

        tables = rank_store(store, k)
        for name in ("topk", "units", "selectivity", "histograms"):
            getattr(tables, name).to_parquet(store.parent / f"{store.stem}-{name}.parquet")
    else:
        root = zarr.open_group(store, mode="r")
        for label in LAYERS:
            values = np.nan_to_num(root[f"{label}/max"][:], nan=-np.inf)
            top = np.argpartition(-values, k - 1, axis=0)[:k]
            np.take_along_axis(values, top, axis=0)
            del values, top
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def measure(kind: str, store: Path, k: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--store", str(store),
                          "--k", str(k)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_fits(n_images: int) -> bool:
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return 2 * n_images * max(LAYERS.values()) * 4 * 2 < free / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000,200000,1281167",
                        help="comma-separated numbers of images")
    parser.add_argument("--k", type=int, default=9, help="top-k per unit")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the generated stores in this folder (reused when present)")
    parser.add_argument("--child", choices=("rank", "numpy"), help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.store, args.k)

    sizes = sorted(int(size) for size in args.sizes.split(","))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="rank-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    units = sum(LAYERS.values())
    try:
        big = folder / f"n{sizes[-1]}.zarr"
        if not (big / "zarr.json").exists():
            generate(big, sizes[-1])
        rows = []
        for n_images in sizes:
            store = folder / f"n{n_images}.zarr"
            if not (store / "zarr.json").exists():
                linked_store(big, store, n_images)
            ranked = measure("rank", store, args.k)
            numpy = measure("numpy", store, args.k) if baseline_fits(n_images) else None
            rows.append((n_images, ranked, numpy))
            print(f"  N={n_images:,}: rank {ranked['seconds']:.1f} s, "
                  f"{ranked['peak_mb']:.0f} MB", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    print(f"\nrank stage on [N, {units}] float32 (5 layers, chunks of {CHUNK} images, "
          f"top-{args.k}), {os.cpu_count()} CPUs")
    print(f"{'N':>10} {'rank s':>8} {'rank MB':>8} {'numpy s':>8} {'numpy MB':>9} "
          f"{'rank/numpy':>10} {'s per 1M':>9}")
    for n_images, ranked, numpy in rows:
        numpy_s = f"{numpy['seconds']:.1f}" if numpy else "-"
        numpy_mb = f"{numpy['peak_mb']:.0f}" if numpy else "-"
        ratio = f"{ranked['seconds'] / numpy['seconds']:.2f}x" if numpy else "-"
        print(f"{n_images:>10,} {ranked['seconds']:>8.1f} {ranked['peak_mb']:>8.0f} "
              f"{numpy_s:>8} {numpy_mb:>9} {ratio:>10} "
              f"{ranked['seconds'] / n_images * 1e6:>9.1f}")
    (n0, first, _), (n1, last, _) = rows[0], rows[-1]
    print(f"\nfrom N={n0:,} to N={n1:,} ({n1 / n0:.1f}x the images): rank time "
          f"{last['seconds'] / first['seconds']:.1f}x, rank peak memory "
          f"{last['peak_mb'] / first['peak_mb']:.2f}x ({last['peak_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
