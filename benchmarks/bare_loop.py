"""The bare decode-and-forward loop: the baseline the activations stage is measured against.

The loop reads the same images as the stage (the run's manifest, each image preprocessed as the
model sees it, an unreadable file giving a zero image as in the stage), with a plain DataLoader
of the workflow's ``[activations]`` batch size, workers and prefetch, and runs the same model
forward on the same device (channels-last and bfloat16 autocast on a GPU when the workflow asks
for them, as the stage does), discarding the output. No summaries, no store, no writer: what is
left is what decoding and the network cost, which the stage can approach but not beat.

It runs in a fresh process (``measure``), from the base folder of a run whose prepare stage is
done, so that nothing the caller loaded or cached changes its time or memory:

    cd RUN_BASE && python /path/to/benchmarks/bare_loop.py -w bench.toml   # {"rate": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(workflow: Path, cwd: Path, data: str | None = None, env: dict | None = None
            ) -> dict:
    """Run the loop in a fresh process from ``cwd`` (``env``: its environment, default ours);
    ``{"images", "seconds", "rate", "peak_mb"}`` (rate in images/s, peak resident memory of
    the loop's main process)."""
    paths = [str(REPO), (env or os.environ).get("PYTHONPATH", "")]
    env = {**(env or os.environ), "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, str(Path(__file__).resolve()), "-w", str(workflow)]
    if data is not None:
        command += ["--data", data]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"bare loop failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def decode_and_forward(model, images, batch_size: int, num_workers: int, prefetch: int,
                       device, channels_last: bool = False, bf16: bool = False) -> float:
    """Seconds to decode every image of ``images`` and run ``model`` on it, batch by batch
    (worker start-up included, as in the stage)."""
    import torch
    from torch.utils.data import DataLoader

    gpu = device.type == "cuda"
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers, pin_memory=gpu,
                        prefetch_factor=prefetch if num_workers else None)
    if gpu and channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu and bf16 else nullcontext()
    start = time.perf_counter()
    with torch.inference_mode():
        for x, _, _ in loader:
            x = x.to(device, non_blocking=True)
            if gpu and channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                model(x)
    if gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workflow", type=Path, required=True)
    parser.add_argument("--data", default=None, help="the [data] root given to `run --data`")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))


    from pipeline import catalog
    from pipeline.config import load_workflow
    from pipeline.data.tolerant import TolerantImages
    from pipeline.device import compute_on
    from pipeline.layout import RunLayout
    from pipeline.run_inputs import analysed_images, analysed_model, preprocessing

    workflow = load_workflow(args.workflow, data_root=args.data)
    layout = RunLayout(base=Path.cwd(), workflow=workflow.name)
    spec = workflow.activations
    device, _ = compute_on(spec.device, tf32=spec.tf32)  # as the stage sets it
    manifest = catalog.MANIFEST.read(catalog.MANIFEST.path(layout))
    classes = catalog.CLASSES.read(catalog.CLASSES.path(layout))
    model = analysed_model(workflow, layout, classes, device)
    prep = preprocessing(workflow)
    images = TolerantImages(analysed_images(workflow, layout, manifest),
                            (len(prep.mean), prep.input_size, prep.input_size))
    seconds = decode_and_forward(model, images, spec.batch_size, spec.num_workers, spec.prefetch,
                                 device, spec.channels_last, spec.bf16)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": len(images), "seconds": seconds, "rate": len(images) / seconds,
                      "peak_mb": peak}))


if __name__ == "__main__":
    main()
