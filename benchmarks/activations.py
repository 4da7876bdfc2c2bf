"""Throughput and peak memory of the activations stage against a bare inference loop.

For each data set size (default 2,000 and 20,000 images at 224 px) it runs, each in a fresh
process: the real stage (`python -m pipeline run activations`) and a bare loop over the same
DataLoader and model forward whose results are discarded (``bare_loop.py``). It prints images/s
of both, their ratio, and each process's peak resident memory, then how much the stage's peak
memory grew from the smallest to the largest data set (it should not grow with N: summaries
stream to zarr).

The larger sets are hard links to the first set's files under new names, so generating them is
cheap while every image is still decoded and preprocessed.

    python benchmarks/activations.py                                # AlexNet, random weights
    python benchmarks/activations.py --device cuda --workers 8 --batch-size 256
    python benchmarks/activations.py --sizes 500,5000 --image-size 224 --model resnet18
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import bare_loop  # benchmarks/bare_loop.py: a script's own folder is on sys.path
import numpy as np
import torch
from PIL import Image

from pipeline.data.classes import imagenet_wnids
from pipeline.models import get_model

STAGE = textwrap.dedent("""
    import resource, sys
    from pipeline.cli import main
    code = main(sys.argv[1:])
    print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    sys.exit(code)
""")


def make_images(folder: Path, count: int, size: int) -> None:
    """``count`` smooth random JPEGs in 4 ImageNet class folders (a few ms each)."""
    rng = np.random.default_rng(0)
    wnids = imagenet_wnids()
    for i in range(count):
        label = folder / wnids[i % 4]
        label.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size + 32, size + 32), Image.BILINEAR).save(
            label / f"img_{i:06d}.JPEG", quality=90)


def link_images(source: Path, folder: Path, count: int) -> None:
    """``count`` files named anew, hard-linked round-robin to the images in ``source``."""
    files = sorted(source.rglob("*.JPEG"))
    for i in range(count):
        original = files[i % len(files)]
        target = folder / original.parent.name / f"img_{i:06d}.JPEG"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(original, target)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--sizes", default="2000,20000", help="data set sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-activations-") as scratch:
        base = Path(scratch)
        torch.manual_seed(0)
        checkpoint = base / "model.pt"
        torch.save(get_model(args.model).state_dict(), checkpoint)
        make_images(base / "data" / f"n{sizes[0]}", sizes[0], args.image_size)
        rows = []
        for n in sizes:
            folder = base / "data" / f"n{n}"
            if not folder.exists():
                link_images(base / "data" / f"n{sizes[0]}", folder, n)
            workflow = base / f"bench{n}.toml"
            workflow.write_text(textwrap.dedent(f"""
                [data]
                root = "{folder}"
                [model]
                name = "{args.model}"
                checkpoint = "{checkpoint}"
                image_size = {args.image_size}
                resize_size = {int(args.image_size * 256 / 224)}
                [activations]
                batch_size = {args.batch_size}
                chunk_size = {args.chunk_size}
                num_workers = {args.workers}
                device = "{args.device}"
            """))
            run(["-m", "pipeline", "run", "prepare", "-w", str(workflow)], cwd=base)
            stage = run(["-c", STAGE, "run", "activations", "-w", str(workflow)], cwd=base)
            stage_rate = float(re.search(r"\(([\d.]+) images/s", stage.stdout).group(1))
            stage_peak = float(re.search(r"PEAK_MB ([\d.]+)", stage.stdout).group(1))
            bare = bare_loop.measure(workflow, cwd=base)
            rows.append((n, stage_rate, bare["rate"], stage_peak, bare["peak_mb"]))
            print(f"N={n:>7}: stage {stage_rate:8.1f} img/s, bare loop {bare['rate']:8.1f} "
                  f"img/s, ratio {stage_rate / bare['rate']:.2f}x; peak memory stage "
                  f"{stage_peak:7.0f} MB, bare loop {bare['peak_mb']:7.0f} MB", flush=True)
    growth = rows[-1][3] / rows[0][3] - 1
    print(f"{args.model} at {args.image_size} px, batch {args.batch_size}, "
          f"{args.workers} workers, device {args.device}")
    print("throughput ratio (stage / bare loop): "
          + ", ".join(f"N={n}: {s / b:.2f}x" for n, s, b, _, _ in rows))
    print(f"stage peak memory growth from N={rows[0][0]} to N={rows[-1][0]}: {growth:+.1%}")


if __name__ == "__main__":
    main()
