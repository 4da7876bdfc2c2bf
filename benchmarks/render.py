"""Time, size and file count of the render stage's atlas for an AlexNet-sized run.

It builds a complete fake run of AlexNet at 224 px in a scratch folder (or ``--keep DIR``,
where a run generated before with the same options is reused): a workflow file, a random-weight
AlexNet state dict as ``[model] checkpoint``, and under ``runs/<name>/`` every file the render
stage reads, with the real schemas:

- ``classes.parquet`` (the 1000 ImageNet classes) and ``manifest.parquet`` (N images, 50 a class
  at the default N = 50,000), ``skipped.parquet`` (a few unreadable images);
- ``activations.zarr`` (5 layers, conv1..conv5 = 64 + 192 + 384 + 256 + 256 = 1,152 units;
  labels, top-5 predictions and the run attributes; the per-unit summaries are left unwritten
  because the render stage does not read them);
- ``topk``/``units``/``selectivity``/``histograms`` tables: about 3 % dead units, 9 top images
  per live unit, class counts over 5 to 40 classes summing to 100, 50 to 200 non-empty
  log-spaced histogram bins per unit;
- ``projections.zarr`` with generated images in place of deconvnet output: projections are
  mid-grey with smooth colour blobs and fine noise under a centred envelope, patches and
  thumbnails are smooth colour fields with an edge and some texture, padded with grey where
  the receptive field leaves the image, as the deconv stage pads them.

Generation is not timed. The render stage then runs twice, each time alone in a fresh process
(``StageContext``, the registered stage function, ``commit``), as ``pipeline run render`` would
run it (model loading included): first with ``[render] workers = 1`` (everything in the render
process: the baseline), then with ``--workers`` processes (default: one per CPU core, what
``workers = 0`` gives). The script prints both wall times and the speed-up, checks that the two
atlases are byte-identical, prints the peak resident memory of the render process (worker
processes not included), the atlas's size and file count with a breakdown by folder and by file
type, and PASS/FAIL of the parallel render against the targets. Sizes are file bytes
(MB = 10**6 bytes, MiB = 2**20 bytes); disk usage in blocks is also shown.

    python benchmarks/render.py                           # N = 50,000 images, scratch folder
    python benchmarks/render.py --keep scratch/render-bench  # keep (and reuse) the fake run
    python benchmarks/render.py --workers 8               # the parallel run with 8 processes
    python benchmarks/render.py --keep scratch/render-bench --profile   # cProfile, top 25
    python benchmarks/render.py --picture-budget 8   # projections binned to 8 megapixels
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

NAME = "alexnet-bench"
IMAGE_SIZE = 224
TOP_K = 9
CLASSES = 1000
CHUNK = 512  # the activations stage's default chunk_size
THUMB = 64  # the deconv stage's thumbnail side
GREY = 128  # zero in a projection, and the padding of patches
DEAD_SHARE = 0.03
N_SKIPPED = 7
TARGET_SECONDS = 60.0
TARGET_MB = 60.0
# label, module, channels, output side, receptive field (size, jump, first), as
# pipeline.interp.receptive_fields gives them for torchvision's AlexNet at 224 px.
LAYERS = (
    ("conv1", "features.1", 64, 55, (11, 4, -2)),
    ("conv2", "features.4", 192, 27, (51, 8, -18)),
    ("conv3", "features.7", 384, 13, (99, 16, -34)),
    ("conv4", "features.9", 256, 13, (131, 16, -50)),
    ("conv5", "features.11", 256, 13, (163, 16, -66)),
)


# ---------------------------------------------------------------------------------------------
# The fake run
# ---------------------------------------------------------------------------------------------

def write_workflow(base: Path) -> Path:
    """The workflow file and the random-weight AlexNet checkpoint it names."""
    import torch

    from pipeline.models import get_model

    torch.manual_seed(0)
    checkpoint = base / "alexnet-random.pt"
    torch.save(get_model("alexnet", num_classes=CLASSES).state_dict(), checkpoint)
    root = base / "imagenet" / "val"
    root.mkdir(parents=True, exist_ok=True)
    path = base / f"{NAME}.toml"
    path.write_text(textwrap.dedent(f"""\
        [data]
        source = "imagefolder"
        root = "{root}"
        [model]
        name = "alexnet"
        checkpoint = "{checkpoint}"
        image_size = {IMAGE_SIZE}
        resize_size = 256
        [rank]
        top_k = {TOP_K}
        # the fake run has no outputs of the experiment stages (Figures 4, 5, 7) or the sanity check
        [occlusion]
        images = 0
        [invariance]
        images = 0
        [sanity]
        enabled = false
        [render]
        title = "Deconv Atlas: AlexNet (random weights, generated projections)"
        """), encoding="utf-8")
    return path


def smooth(rng: np.random.Generator, n: int, grid: int, side: int, channels: int = 3
           ) -> np.ndarray:
    """``[n, side, side, channels]`` float32 smooth noise (unit-ish std): bicubic upsampling of
    a ``grid x grid`` normal field."""
    import torch
    import torch.nn.functional as F

    small = torch.from_numpy(rng.standard_normal((n, channels, grid, grid), dtype=np.float32))
    big = F.interpolate(small, size=(side, side), mode="bicubic", align_corners=False)
    return big.permute(0, 2, 3, 1).numpy()


def natural(rng: np.random.Generator, n: int, side: int, detail: float = 16.0) -> np.ndarray:
    """``[n, side, side, 3]`` float32 image-like content in 0..255: a smooth colour field, one
    soft edge between two colours, mid-frequency colour texture, fine luminance detail of
    amplitude ``detail`` and a little sensor noise.

    The defaults were set so that JPEG at quality 85 spends about as many bits per pixel on
    these patches as on crops of a real photo of the same size (about 3 bits at 100 px);
    thumbnails use more ``detail``, as a whole image shrunk to 64 px is denser than a crop."""
    base = rng.uniform(50, 200, (n, 1, 1, 3)).astype(np.float32)
    field = 35 * smooth(rng, n, 3, side)
    angle = rng.uniform(0, np.pi, (n, 1, 1))
    offset = rng.uniform(-0.3, 0.3, (n, 1, 1)) * side
    coords = np.arange(side, dtype=np.float32) - side / 2
    distance = (np.cos(angle) * coords[None, :, None] + np.sin(angle) * coords[None, None, :]
                - offset)
    edge = np.tanh(distance / 1.5).astype(np.float32)[..., None]
    edge = edge * rng.normal(0, 45, (n, 1, 1, 3)).astype(np.float32)
    texture = 14 * smooth(rng, n, max(3, side // 5), side)
    fine = detail * smooth(rng, n, max(3, side // 2), side, channels=1)
    noise = rng.normal(0, 4, (n, side, side, 3)).astype(np.float32)
    return base + field + edge + texture + fine + noise


def projection_like(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """``[n, side, side, 3]`` float32 deconvnet-like output in 0..255: grey, with structured
    colour under a centred Gaussian envelope (strong where the unit looked) and fine noise."""
    coords = np.arange(side, dtype=np.float32)
    centre = side / 2 + rng.normal(0, side / 10, (n, 2)).astype(np.float32)
    sigma = (side * rng.uniform(0.12, 0.3, (n, 1, 1))).astype(np.float32)
    dy = (coords[None, :] - centre[:, :1]) ** 2
    dx = (coords[None, :] - centre[:, 1:]) ** 2
    envelope = np.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * sigma**2))[..., None]
    blobs = 60 * smooth(rng, n, max(3, side // 12), side)
    strokes = 35 * smooth(rng, n, max(3, side // 4), side)
    fine = rng.normal(0, 10, (n, side, side, 3)).astype(np.float32)
    background = rng.normal(0, 1.5, (n, side, side, 3)).astype(np.float32)
    return GREY + envelope * (blobs + strokes + fine) + background


def inside_image(tops: np.ndarray, lefts: np.ndarray, side: int) -> np.ndarray:
    """``[n, side, side, 1]`` mask of the tile pixels that fall inside the image."""
    offsets = np.arange(side)
    rows = (tops[:, None] + offsets >= 0) & (tops[:, None] + offsets < IMAGE_SIZE)
    cols = (lefts[:, None] + offsets >= 0) & (lefts[:, None] + offsets < IMAGE_SIZE)
    return (rows[:, :, None] & cols[:, None, :])[..., None]


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def write_projections(run: Path, live: dict[str, np.ndarray], positions: dict[str, np.ndarray],
                      rng: np.random.Generator) -> None:
    """``projections.zarr`` as the deconv stage lays it out, with generated images."""
    import zarr

    from pipeline.interp.projection_meta import ProjectionsMeta

    root = zarr.open_group(run / "projections.zarr", mode="w")
    root.attrs.update(ProjectionsMeta(("deconvnet",), IMAGE_SIZE, "cuda").to_attrs())
    for label, module, channels, side, (size, jump, first) in LAYERS:
        tile = min(size, IMAGE_SIZE)
        group = root.create_group(label)
        top = first + size / 2 - jump / 2
        group.attrs.update({"module": module, "tile": [tile, tile],
                            "receptive_field": [size, size], "methods": ["deconvnet"],
                            "map_extent": [top, top, top + jump * side, top + jump * side]})
        projections = np.zeros((1, channels, TOP_K, tile, tile, 3), np.float16)
        scales = np.zeros((1, channels, TOP_K), np.float32)
        patches = np.full((channels, TOP_K, tile, tile, 3), GREY, np.uint8)
        maps = np.zeros((channels, TOP_K, side, side), np.float32)
        boxes = np.full((channels, TOP_K, 4), -1, np.int32)
        thumbs = np.full((channels, TOP_K, THUMB, THUMB, 3), GREY, np.uint8)
        units = np.flatnonzero(live[label])
        yx = positions[label]  # [channels, k, 2]
        batch = max(1, 2_000_000 // (tile * tile))  # tiles generated at once (~24 MB each array)
        cells = [(unit, rank) for unit in units for rank in range(TOP_K)]
        for start in range(0, len(cells), batch):
            part = np.asarray(cells[start:start + batch])
            u, r = part[:, 0], part[:, 1]
            tops = first + yx[u, r, 0] * jump
            lefts = first + yx[u, r, 1] * jump
            mask = inside_image(tops, lefts, tile)
            n = len(part)
            values = np.where(mask, projection_like(rng, n, tile) - GREY, 0.0)
            peak = np.abs(values).reshape(n, -1).max(axis=1)
            projections[0, u, r] = values / peak[:, None, None, None]
            scales[0, u, r] = peak
            patches[u, r] = np.where(mask, to_uint8(natural(rng, n, tile)), GREY)
            boxes[u, r] = np.stack([tops, lefts, tops + size, lefts + size], axis=1)
        for start in range(0, len(cells), 512):
            part = np.asarray(cells[start:start + 512])
            thumbs[part[:, 0], part[:, 1]] = to_uint8(natural(rng, len(part), THUMB, detail=28.0))
        # activation maps: a bump at the ranked position over weak background activity
        grid = np.arange(side)
        for unit, rank in cells:
            y, x = yx[unit, rank]
            bump = np.exp(-((grid[:, None] - y) ** 2 + (grid[None, :] - x) ** 2) / 4.0)
            maps[unit, rank] = bump + np.maximum(rng.normal(0, 0.15, (side, side)), 0)
        for name, values in (("projections", projections), ("projection_scale", scales),
                             ("patches", patches), ("boxes", boxes), ("thumbs", thumbs),
                             ("maps", maps)):
            chunks = (1, 1, *values.shape[2:]) if name.startswith("projection") \
                else (1, *values.shape[1:])
            array = group.create_array(name, shape=values.shape, dtype=values.dtype,
                                       chunks=chunks)
            array[:] = values
        print(f"  projections {label}: {len(units)} live units, tiles {tile} px", flush=True)


def write_tables(run: Path, n_images: int, labels: np.ndarray, readable: np.ndarray,
                 rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The rank stage's four tables; returns each layer's live units and top-k positions."""
    import pandas as pd

    from pipeline.ranking import RankMeta, write_topk
    from pipeline.ranking.histogram import ZERO_BIN, bin_edges, bin_index
    from pipeline.schemas import Histograms, Selectivity, Topk, Units

    edges = bin_edges()
    n_readable = int(readable.sum())
    readable_ids = np.flatnonzero(readable)
    frames: dict[str, list[pd.DataFrame]] = defaultdict(list)
    live_units, positions = {}, {}
    for depth, (label, _, channels, side, _) in enumerate(LAYERS):
        dead = rng.random(channels) < DEAD_SHARE
        live = ~dead
        live_units[label] = live
        positions[label] = rng.integers(0, side, (channels, TOP_K, 2))
        peak = np.where(live, rng.lognormal(np.log(4.0 * (depth + 1)), 0.5, channels), 0.0)
        mean_max = peak * rng.uniform(0.1, 0.35, channels)
        std_max = mean_max * rng.uniform(0.3, 0.8, channels)
        frac_active = np.where(live, rng.uniform(0.15, 1.0, channels), 0.0)
        top_class = np.full(channels, -1, np.int32)
        share = np.zeros(channels, np.float32)
        entropy = np.zeros(channels, np.float32)
        n_selectivity = np.where(live, 100, 0).astype(np.int32)

        topk_rows, sel_rows, hist_rows = [], [], []
        for unit in np.flatnonzero(live):
            ids = rng.choice(readable_ids, TOP_K, replace=False)
            values = peak[unit] * np.sort(rng.uniform(0.75, 1.0, TOP_K))[::-1]
            values[0] = peak[unit]
            topk_rows.append(pd.DataFrame({
                Topk.layer: label, Topk.unit: np.int32(unit),
                Topk.rank: np.arange(TOP_K, dtype=np.int32),
                Topk.image_id: ids.astype(np.int64), Topk.value: values.astype(np.float32),
                Topk.y: positions[label][unit, :, 0].astype(np.int32),
                Topk.x: positions[label][unit, :, 1].astype(np.int32)}))
            # class selectivity: 100 top images over 5..40 classes, a few of them dominant
            m = int(rng.integers(5, 41))
            classes = np.sort(rng.choice(CLASSES, m, replace=False)).astype(np.int32)
            counts = 1 + rng.multinomial(100 - m, rng.dirichlet(np.full(m, 0.5)))
            best = int(np.argmax(counts))
            p = counts / counts.sum()
            top_class[unit], share[unit] = classes[best], p[best]
            entropy[unit] = float(-(p * np.log2(p)).sum())
            sel_rows.append(pd.DataFrame({Selectivity.layer: label,
                                          Selectivity.unit: np.int32(unit),
                                          Selectivity.class_index: classes,
                                          Selectivity.count: counts.astype(np.int32)}))
            # histogram: 50..200 adjacent log-spaced bins up to the peak's bin, plus the zeros
            top_bin = int(bin_index(np.float32([peak[unit]]))[0])
            length = int(rng.integers(50, 201))
            bins = np.arange(max(ZERO_BIN + 1, top_bin - length + 1), top_bin + 1)
            length = min(len(bins), max(1, int(round(frac_active[unit] * n_readable))))
            bins = bins[len(bins) - length:]
            active = max(int(round(frac_active[unit] * n_readable)), len(bins))
            centre = rng.uniform(0.4, 0.8) * len(bins)
            weights = np.exp(-0.5 * ((np.arange(len(bins)) - centre) / (len(bins) / 5)) ** 2)
            counts = rng.multinomial(active - len(bins), weights / weights.sum()) + 1
            counts[-1] = 1  # the peak image alone in the top bin
            index, counts = np.r_[ZERO_BIN, bins], np.r_[n_readable - counts.sum(), counts]
            keep = counts > 0  # the rank stage stores non-empty bins only
            hist_rows.append(pd.DataFrame({
                Histograms.layer: label, Histograms.unit: np.int32(unit),
                Histograms.low: edges[index[keep]].astype(np.float32),
                Histograms.high: edges[index[keep] + 1].astype(np.float32),
                Histograms.count: counts[keep].astype(np.int64)}))
        for unit in np.flatnonzero(dead):
            hist_rows.append(pd.DataFrame({
                Histograms.layer: label, Histograms.unit: np.int32(unit),
                Histograms.low: edges[[ZERO_BIN]].astype(np.float32),
                Histograms.high: edges[[ZERO_BIN + 1]].astype(np.float32),
                Histograms.count: np.int64([n_readable])}))
        frames["topk"].extend(topk_rows)
        frames["selectivity"].extend(sel_rows)
        frames["histograms"].append(pd.concat(hist_rows).sort_values(
            [Histograms.unit, Histograms.low]))
        frames["units"].append(pd.DataFrame({
            Units.layer: label, Units.unit: np.arange(channels, dtype=np.int32),
            Units.peak: peak.astype(np.float32), Units.mean_max: mean_max.astype(np.float32),
            Units.std_max: std_max.astype(np.float32),
            Units.frac_active: frac_active.astype(np.float32),
            Units.q50: (mean_max * 0.9).astype(np.float32),
            Units.q90: (mean_max + 1.3 * std_max).astype(np.float32),
            Units.q99: np.minimum(peak, mean_max + 2.5 * std_max).astype(np.float32),
            Units.q999: np.minimum(peak, mean_max + 3.3 * std_max).astype(np.float32),
            Units.dead: dead, Units.n_top: np.where(live, TOP_K, 0).astype(np.int32),
            Units.top_class: top_class, Units.top_class_share: share,
            Units.class_entropy: entropy, Units.n_selectivity: n_selectivity}))
    for name, parts in frames.items():
        frame = pd.concat(parts, ignore_index=True)
        if name == "topk":  # top_k is recorded in the table's metadata, as rank writes it
            write_topk(frame, run / "topk.parquet", RankMeta(TOP_K))
        else:
            frame.to_parquet(run / f"{name}.parquet", index=False)
    return live_units, positions


def generate(base: Path, n_images: int, seed: int = 0) -> Path:
    """Write the workflow, the checkpoint and the run folder; return the workflow file."""
    import pandas as pd
    import torch

    from pipeline.atomic import write_json
    from pipeline.data.classes import imagenet_names, imagenet_wnids
    from pipeline.inference.store import LayerMeta, create_store
    from pipeline.labelled import ImageCoords

    torch.set_num_threads(1)  # generation is not measured; leave the other core alone
    rng = np.random.default_rng(seed)
    workflow = write_workflow(base)
    run = base / "runs" / NAME
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    wnids, names = imagenet_wnids(), imagenet_names()
    pd.DataFrame({"label": np.arange(CLASSES, dtype=np.int64), "name": list(names),
                  "wnid": list(wnids)}).to_parquet(run / "classes.parquet", index=False)

    labels = (np.arange(n_images) * CLASSES // n_images).astype(np.int64)
    paths = [f"{wnids[label]}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i, label in enumerate(labels)]
    pd.DataFrame({"image_id": np.arange(n_images, dtype=np.int64),
                  "path": pd.Series(paths, dtype=object), "label": labels}
                 ).to_parquet(run / "manifest.parquet", index=False)
    skipped = np.sort(rng.choice(n_images, min(N_SKIPPED, n_images - 1), replace=False))
    reasons = ["cannot identify image file", "image file is truncated (12 bytes not processed)"]
    pd.DataFrame({"image_id": skipped.astype(np.int64),
                  "path": pd.Series([paths[i] for i in skipped], dtype=object),
                  "reason": [reasons[i % 2] for i in range(len(skipped))]}
                 ).to_parquet(run / "skipped.parquet", index=False)
    readable = np.ones(n_images, bool)
    readable[skipped] = False

    meta = [LayerMeta(label, module, channels, side, side, (rf[0], rf[0]))
            for label, module, channels, side, rf in LAYERS]
    store = create_store(run / "activations.zarr", ImageCoords.numbered(n_images, labels), CHUNK,
                         meta, top=5)
    pred = rng.integers(0, CLASSES, (n_images, 5), dtype=np.int32)
    hit = rng.random(n_images)
    pred[hit < 0.57, 0] = labels[hit < 0.57]  # about AlexNet's top-1 and top-5
    pred[(hit >= 0.57) & (hit < 0.80), 1] = labels[(hit >= 0.57) & (hit < 0.80)]
    pred[~readable] = -1
    store["pred"][:] = pred
    top1 = float((pred[readable, 0] == labels[readable]).mean())
    top5 = float((pred[readable] == labels[readable, None]).any(axis=1).mean())
    store.attrs.update({"top1": top1, "top5": top5, "n_readable": int(readable.sum()),
                        "device": "cuda"})
    print(f"  tables and activations store: {n_images:,} images", flush=True)

    live, positions = write_tables(run, n_images, labels, readable, rng)
    write_projections(run, live, positions, rng)
    for stage, seconds in (("prepare", 4.1), ("activations", 212.0), ("rank", 61.3),
                           ("deconv", 95.2)):
        write_json(run / "stamps" / f"{stage}.json", {"stage": stage, "seconds": seconds})
    write_json(base / "generated.json", {"images": n_images, "seed": seed})
    return workflow


# ---------------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------------

def child(base: Path, profile: bool, workers: int) -> None:
    """Run the render stage once in this process with ``workers``; print its seconds and peak
    memory as JSON."""
    import dataclasses

    from pipeline.config import load_workflow
    from pipeline.layout import RunLayout
    from pipeline.stages import get_stage
    from pipeline.stages.context import StageContext

    workflow = load_workflow(base / f"{NAME}.toml")
    workflow = dataclasses.replace(workflow, render=dataclasses.replace(workflow.render,
                                                                        workers=workers))
    layout = RunLayout(base=base, workflow=workflow.name)
    ctx = StageContext(workflow, layout, get_stage("render"), key="bench")
    stage = get_stage("render").func
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    sampler = WorkerMemory()
    sampler.start()
    start = time.perf_counter()
    stage(ctx)
    ctx.commit()
    seconds = time.perf_counter() - start
    sampler.stop()
    if profiler is not None:
        import pstats

        profiler.disable()
        print(f"\ncProfile of the render stage with {workers} worker(s) (under the profiler; "
              "worker processes are not profiled), top 25 by cumulative time:")
        stats = pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative")
        stats.print_stats(25)
        print("The same, the pipeline's own functions only (top 20):")
        stats.print_stats(r"/pipeline/", 20)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "worker_mb": sampler.peak_mb}))


class WorkerMemory(threading.Thread):
    """The largest peak resident memory of the render's worker processes, read from
    ``/proc/PID/status`` (VmHWM) every 0.2 s while they run. Not ``RUSAGE_CHILDREN``: a child's
    maximum counts the parent's memory it held between fork and exec."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        import multiprocessing

        while not self._done.wait(0.2):
            for child in multiprocessing.active_children():
                try:
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure(base: Path, profile: bool, workers: int) -> dict:
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, __file__, "--child", str(base), "--workers", str(workers)]
    result = subprocess.run(command + (["--profile"] if profile else []), env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-4000:])
    lines = result.stdout.rstrip().splitlines()
    if profile:
        print("\n".join(lines[:-1]))
    return json.loads(lines[-1])


def digests(report: Path) -> dict[str, str]:
    """SHA-256 of every file of the atlas, by relative path."""
    return {path.relative_to(report).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(report.rglob("*")) if path.is_file()}


def inventory(report: Path) -> list[tuple[str, int, int]]:
    """(relative POSIX path, bytes, bytes on disk) of every file of the atlas."""
    rows = []
    for path in sorted(report.rglob("*")):
        if path.is_file():
            stat = path.stat()
            rows.append((path.relative_to(report).as_posix(), stat.st_size, stat.st_blocks * 512))
    return rows


def breakdown(rows: list[tuple[str, int, int]], key, title: str) -> None:
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for path, size, disk in rows:
        group = groups[key(path)]
        group[0] += 1
        group[1] += size
        group[2] += disk
    total = sum(size for _, size, _ in rows) or 1
    print(f"\n{title:<16} {'files':>7} {'MB':>9} {'share':>7} {'KB/file':>9} {'disk MB':>9}")
    for name, (count, size, disk) in sorted(groups.items(), key=lambda item: -item[1][1]):
        print(f"{name:<16} {count:>7,} {size / 1e6:>9.2f} {size / total:>7.1%} "
              f"{size / count / 1e3:>9.1f} {disk / 1e6:>9.2f}")


def folder_of(path: str) -> str:
    return path.split("/")[0] + "/" if "/" in path else "(top level)"


def layer_folder_of(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[:2]) + "/" if len(parts) > 2 else folder_of(path)


def file_type(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return suffix or "(none)"


def set_picture_budget(workflow: Path, budget: float | None) -> None:
    """Set (or, with None, drop) ``[render] picture_budget`` in the workflow file."""
    lines = [line for line in workflow.read_text(encoding="utf-8").splitlines()
             if not line.startswith("picture_budget")]
    if budget is not None:
        lines.insert(lines.index("[render]") + 1, f"picture_budget = {budget}")
    workflow.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=f"Targets: at most {TARGET_SECONDS:g} s and {TARGET_MB:g} MB (10**6 bytes).")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="build the fake run in DIR and keep it (reused when it was "
                             "generated with the same --images)")
    parser.add_argument("--images", type=int, default=50_000, metavar="N",
                        help="images in the fake data set (default 50,000)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="processes of the parallel run (default 0: one per CPU core)")
    parser.add_argument("--picture-budget", type=float, default=None, metavar="MP",
                        help="[render] picture_budget of the rendered atlas (megapixels of "
                             "projection pictures); default: the pipeline's default")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of the render stage (top 25, cumulative; "
                             "the timed figures then include the profiler's overhead)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child.resolve(), args.profile, args.workers)
    if args.images < 100:
        parser.error("--images must be at least 100")
    if args.workers < 0:
        parser.error("--workers must be at least 0")
    from pipeline.atlas.parallel import worker_count

    workers = worker_count(args.workers)

    base = (args.keep or Path(tempfile.mkdtemp(prefix="render-bench-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    units = sum(channels for _, _, channels, _, _ in LAYERS)
    try:
        from pipeline.atomic import read_json

        if read_json(base / "generated.json") == {"images": args.images, "seed": 0}:
            print(f"reusing the fake run in {base}")
        else:
            print(f"generating a fake AlexNet run ({units:,} units, {args.images:,} images) in "
                  f"{base}", flush=True)
            clock = time.perf_counter()
            generate(base, args.images)
            print(f"  generated in {time.perf_counter() - clock:.0f} s (not timed)")
        set_picture_budget(base / f"{NAME}.toml", args.picture_budget)
        report = base / "reports" / NAME
        results, atlases = {}, {}
        for count in (1, workers):
            shutil.rmtree(report, ignore_errors=True)
            print(f"rendering the atlas with {count} worker(s) ...", flush=True)
            results[count] = measure(base, args.profile, count)
            atlases[count] = digests(report)
        rows = inventory(report)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    size = sum(size for _, size, _ in rows)
    disk = sum(disk for _, _, disk in rows)
    serial, result = results[1], results[workers]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nrender stage, AlexNet at {IMAGE_SIZE} px, top-{TOP_K}, {args.images:,} images, "
          f"{os.cpu_count()} CPUs{' (under cProfile)' if args.profile else ''}; load average "
          f"{load:.1f} over the last minute (above {workers}: other processes shared the CPUs)")
    per_layer = ", ".join(f"{label} {channels}" for label, _, channels, _, _ in LAYERS)
    print(f"  units           {units:,} ({per_layer})")
    print(f"  time, 1 worker  {serial['seconds']:.1f} s (wall, model loading included; "
          "the baseline)")
    print(f"  time, {workers} workers {result['seconds']:.1f} s: "
          f"{serial['seconds'] / result['seconds']:.2f}x the baseline's speed")
    same = atlases[1] == atlases[workers]
    print(f"  identical       {'yes' if same else 'NO'}: the two atlases, file by file "
          f"({len(atlases[workers]):,} files)")
    print(f"  peak memory     {serial['peak_mb']:.0f} MB with 1 worker; with {workers}: "
          f"{result['peak_mb']:.0f} MB, and {result['worker_mb']:.0f} MB the largest worker "
          "(resident, sampled)")
    print(f"  atlas size      {size / 1e6:.1f} MB = {size / 2**20:.1f} MiB of file bytes "
          f"({disk / 1e6:.1f} MB on disk in blocks)")
    print(f"  files           {len(rows):,}")
    breakdown(rows, folder_of, "folder")
    breakdown(rows, layer_folder_of, "folder/layer")
    breakdown(rows, file_type, "file type")
    time_ok = result["seconds"] <= TARGET_SECONDS
    size_ok = size / 1e6 <= TARGET_MB
    verdict = "PASS" if time_ok and size_ok and same else "FAIL"
    print(f"\n{verdict}: time {result['seconds']:.1f} s (target <= {TARGET_SECONDS:g} s: "
          f"{'ok' if time_ok else 'over'}), size {size / 1e6:.1f} MB (target <= "
          f"{TARGET_MB:g} MB: {'ok' if size_ok else 'over'}), {len(rows):,} files")


if __name__ == "__main__":
    main()
