"""The whole pipeline at ImageNet scale: `run all` over N ImageNet-like JPEGs, stage by stage.

It generates (or reuses, with ``--data DIR``) an image folder shaped like ImageNet val (see
``imagenet_like.py``), saves a random-weight torchvision AlexNet or VGG16 into a temporary torch
hub cache under the file name torchvision's weights enum expects (so the real offline loading
path runs), and runs ``python -m pipeline run all`` on a copy of ``workflows/<model>-imagenet.toml``
in a temporary folder (where runs/ and reports/ land). While it runs, the resident memory of its
process tree (the main process and its DataLoader workers) is sampled every 50 ms and each sample
is given to the stage that ``runs/<workflow>/pipeline.log`` says is running. Then, alone, a bare
decode-and-forward loop over the same files with the workflow's [activations] batch size and
workers (``bare_loop.py``) gives the baseline of the activations stage.

It prints, per stage: seconds (from the stage's stamp), its throughput in its own unit (images/s
for activations, projections/s for deconv, units/s for featurevis and render, occluded images/s
for occlusion, ...), and the peak resident memory of the main process and of the whole tree
(the tree's figure sums RSS over processes, so pages a forked worker shares with its parent
count twice: an upper bound); then the wall time of `run all` and the activations stage
against the bare loop. The loop runs after `run all`, so on a machine with the memory to hold
the set both read the files from the page cache (the generator has just written them); a cold
first read is not measured.

    python benchmarks/end_to_end.py                      # N = 5,000 on a CPU, 50,000 on a GPU
    python benchmarks/end_to_end.py --images 300 --workers 2 --data imagenet-like-300
    python benchmarks/end_to_end.py --model vgg16 --device cuda --keep
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import bare_loop  # the benchmarks folder is on sys.path: this is a script
import imagenet_like

REPO = Path(__file__).resolve().parents[1]
DEVICE_SECTIONS = ("activations", "deconv", "featurevis", "occlusion", "evolution", "invariance",
                   "sanity")
PAGE = os.sysconf("SC_PAGE_SIZE")
LOG_LINE = re.compile(r"^\S+ (\w+): (start|done in|failed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None,
                        help="images generated (default: 50,000 on a GPU, 5,000 on a CPU)")
    parser.add_argument("--model", choices=("alexnet", "vgg16"), default="alexnet")
    parser.add_argument("--device", default=None, help="device of every stage (default: the "
                        "workflow's, 'auto')")
    parser.add_argument("--workers", type=int, default=None,
                        help="[activations] and [deconv] num_workers, [render] workers "
                        "(default: the workflow's)")
    parser.add_argument("--data", type=Path, default=None, help="folder of the generated images, "
                        "kept and reused by the next run with the same --images (default: a "
                        "temporary folder)")
    parser.add_argument("--featurevis-steps", type=int, default=None, metavar="N",
                        help="[featurevis] steps (default: the workflow's 512 on a GPU; on a "
                        "CPU the stage is off unless N is given: 1,152 units at 512 steps take "
                        "hours there, whatever the number of images)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder and say where")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # this checkout's package, whatever else is installed

    on_gpu = print_machine(args.device)
    images = args.images or (50_000 if on_gpu else 5_000)
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        data = generate_images(args.data or work / "data", images)
        steps = args.featurevis_steps if args.featurevis_steps is not None or on_gpu else 0
        workflow = write_workflow(work, args.model, args.device, args.workers, steps)
        env = {**os.environ, "TORCH_HOME": str(work / "torch"), "DECONV_ATLAS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO),
                                                         os.environ.get("PYTHONPATH")) if p)}
        save_random_weights(workflow, work / "torch")
        run = run_pipeline(workflow, data, work, env)
        print("bare decode-and-forward loop over the same files ...", flush=True)
        bare = bare_loop.measure(workflow, cwd=work, data=str(data), env=env)
        report(run, bare, work / "runs" / workflow.stem, images)
    finally:
        if args.keep:
            print(f"kept: {work} (runs/, reports/, the workflow copy, run-all.log)")
        else:
            shutil.rmtree(work, ignore_errors=True)


def print_machine(device: str | None) -> bool:
    """Print the GPU name (or that there is none) and the CPU count; whether the run is on a GPU."""
    import torch

    cuda = torch.cuda.is_available()
    gpu = (device or "auto").startswith("cuda") or (device in (None, "auto") and cuda)
    cpus = f"{os.cpu_count()} CPUs, torch {torch.__version__}"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB); {cpus}", flush=True)
    else:
        print(f"no GPU; {cpus}", flush=True)
    return gpu


def generate_images(root: Path, images: int) -> Path:
    made = imagenet_like.generate(root, images)
    print(imagenet_like.describe(made), flush=True)
    return root.resolve()


def write_workflow(work: Path, model: str, device: str | None, workers: int | None,
                   featurevis_steps: int | None = None) -> Path:
    """A copy of ``workflows/<model>-imagenet.toml`` in ``work`` (same file name, so the same
    run folder name), with ``device`` set in every section that has one, ``workers`` as
    the decoding processes of activations and deconv (``num_workers``) and render's
    (``workers``), and ``featurevis_steps`` as [featurevis] steps (0: the stage off)."""
    source = REPO / "workflows" / f"{model}-imagenet.toml"
    table = tomllib.loads(source.read_text(encoding="utf-8"))
    if device:
        for section in DEVICE_SECTIONS:
            table.setdefault(section, {})["device"] = device
    if workers is not None:
        for section, key in (("activations", "num_workers"), ("deconv", "num_workers"),
                             ("render", "workers")):
            table.setdefault(section, {})[key] = workers
    if featurevis_steps == 0:
        print("[featurevis] off (a fixed cost of hours on a CPU; --featurevis-steps N runs it)")
        table.setdefault("featurevis", {})["enabled"] = False
    elif featurevis_steps is not None:
        table.setdefault("featurevis", {})["steps"] = featurevis_steps
    target = work / "workflows" / source.name
    target.parent.mkdir(parents=True)
    target.write_text(to_toml(table), encoding="utf-8")
    return target


def to_toml(table: dict, prefix: str = "") -> str:
    """TOML text of a workflow table (strings, numbers, booleans, lists of them, sub-tables);
    JSON's spelling of those values is TOML's."""
    scalars = [f"{key} = {json.dumps(value)}" for key, value in table.items()
               if not isinstance(value, dict)]
    lines = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    text = "\n".join(lines) + ("\n\n" if lines else "")
    for key, value in table.items():
        if isinstance(value, dict):
            text += to_toml(value, f"{prefix}.{key}" if prefix else key)
    return text


def save_random_weights(workflow: Path, torch_home: Path) -> None:
    """A random-weight model saved where torchvision looks for the workflow's [model] weights:
    ``$TORCH_HOME/hub/checkpoints/`` under the name in the weights enum's URL."""
    import torch
    import torchvision

    spec = tomllib.loads(workflow.read_text(encoding="utf-8"))["model"]
    weights = torchvision.models.get_model_weights(spec["name"])[spec["weights"]]
    target = torch_home / "hub" / "checkpoints" / Path(weights.url).name
    target.parent.mkdir(parents=True)
    torch.manual_seed(0)
    model = torchvision.models.get_model(spec["name"], weights=None)
    torch.save(model.state_dict(), target)


class StageMemory(threading.Thread):
    """Samples the resident memory of a process and its descendants every ``interval`` seconds
    and keeps, per stage named in the run's log, the peak of the main process and of the tree
    (in bytes; samples outside any stage go to ``""``)."""

    def __init__(self, pid: int, log: Path, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.log, self.interval = pid, log, interval
        self.peaks: dict[str, list[int]] = {}
        self.stage = ""
        self._offset = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._follow_log()
            main, tree = self._resident()
            peak = self.peaks.setdefault(self.stage, [0, 0])
            peak[0], peak[1] = max(peak[0], main), max(peak[1], tree)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def _follow_log(self) -> None:
        try:
            with open(self.log, encoding="utf-8") as log:
                log.seek(self._offset)
                text = log.read()
        except FileNotFoundError:
            return
        complete = text[:text.rfind("\n") + 1]  # a line still being written waits
        self._offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            match = LOG_LINE.match(line)
            if match:
                stage, event = match.groups()
                if event == "start":
                    print(f"  {stage} ...", flush=True)
                self.stage = stage if event == "start" else ""

    def _resident(self) -> tuple[int, int]:
        main = tree = 0
        pending = [self.pid]
        while pending:
            pid = pending.pop()
            try:
                with open(f"/proc/{pid}/statm") as statm:
                    rss = int(statm.read().split()[1]) * PAGE
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        pending.extend(int(child) for child in children.read().split())
            except (FileNotFoundError, ProcessLookupError):  # it ended while we looked
                continue
            tree += rss
            main = rss if pid == self.pid else main
        return main, tree


def run_pipeline(workflow: Path, data: Path, work: Path, env: dict) -> dict:
    """Run `run all` as a subprocess in ``work``; its wall time, memory peaks and output."""
    command = [sys.executable, "-m", "pipeline", "run", "all", "-w", str(workflow),
               "--data", str(data)]
    output = work / "run-all.log"
    print(f"python -m pipeline run all -w {workflow.name} --data {data}", flush=True)
    with open(output, "w", encoding="utf-8") as sink:
        clock = time.perf_counter()
        process = subprocess.Popen(command, cwd=work, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
        memory = StageMemory(process.pid, work / "runs" / workflow.stem / "pipeline.log")
        memory.start()
        code = process.wait()
        wall = time.perf_counter() - clock
        memory.stop()
    text = output.read_text(encoding="utf-8", errors="replace")
    if code:
        raise SystemExit(f"run all failed (exit {code}):\n{text[-3000:]}")
    return {"wall": wall, "peaks": memory.peaks, "output": text}


def stage_work(stage: str, run: Path, images: int) -> tuple[float, str] | None:
    """How much work ``stage`` did, in its own unit, read from its outputs."""
    import pandas as pd
    import zarr

    if stage in ("prepare", "activations", "rank"):
        return images, "images"
    if stage == "deconv":
        methods = len(zarr.open_group(run / "projections.zarr", mode="r").attrs["methods"])
        return len(pd.read_parquet(run / "topk.parquet")) * methods, "projections"
    if stage == "occlusion":
        store = zarr.open_group(run / "occlusion.zarr", mode="r")
        rows, columns = store.attrs["grid"]
        return store["image"].shape[0] * rows * columns, "occluded images"
    if stage == "invariance":
        return len(pd.read_parquet(run / "invariance.parquet")), "transformed images"
    if stage == "featurevis":
        store = zarr.open_group(run / "featurevis.zarr", mode="r")
        return sum(group["unit"].shape[0] for _, group in store.groups()), "units"
    if stage == "render":
        return len(pd.read_parquet(run / "units.parquet")), "units"
    return None


def report(run: dict, bare: dict, run_dir: Path, images: int) -> None:
    """The table of stages, then the activations stage against the bare loop."""
    from pipeline.cli import STAGE_NAMES

    print(f"\n{'stage':<12} {'seconds':>8} {'work':>10}  {'unit':<18} {'per second':>10}  "
          f"{'peak MiB: main':>14} {'tree':>7}")
    total = 0.0
    for stage in STAGE_NAMES:
        stamp = run_dir / "stamps" / f"{stage}.json"
        if not stamp.is_file():
            print(f"{stage:<12} {'off':>8}")
            continue
        seconds = float(json.loads(stamp.read_text())["seconds"])
        total += seconds
        count, unit = stage_work(stage, run_dir, images) or (0, "")
        rate = f"{count / seconds:10,.1f}" if count and seconds else f"{'-':>10}"
        work = f"{count:10,.0f}" if count else f"{'-':>10}"
        print(f"{stage:<12} {seconds:8.1f} {work}  {unit:<18} {rate}  "
              f"{_peaks(run['peaks'].get(stage))}")
    print(f"{'(between)':<12} {run['wall'] - total:8.1f} {'':>10}  {'start-up, checks':<18} "
          f"{'':>10}  {_peaks(run['peaks'].get(''))}")
    overall = [max((peak[i] for peak in run["peaks"].values()), default=0) for i in (0, 1)]
    print(f"{'run all':<12} {run['wall']:8.1f} {images:10,}  {'images':<18} "
          f"{images / run['wall']:10,.1f}  {_peaks(overall)}")

    stage_seconds = float(json.loads((run_dir / "stamps" / "activations.json").read_text())
                          ["seconds"])
    loop = re.search(r"\[activations\] (\d+) images in ([\d.]+) s", run["output"])
    print(f"\nbare loop: {bare['rate']:,.1f} images/s ({bare['images']} images in "
          f"{bare['seconds']:.1f} s, peak {bare['peak_mb']:,.0f} MiB)")
    print(f"activations stage: {images / stage_seconds:,.1f} images/s over the whole stage, "
          f"{images / stage_seconds / bare['rate']:.2f}x the bare loop", end="")
    if loop:
        rate = int(loop.group(1)) / float(loop.group(2))
        print(f"; its inference loop {rate:,.1f} images/s, {rate / bare['rate']:.2f}x", end="")
    print()


def _peaks(peak: list[int] | None) -> str:
    """Main and tree peaks in MiB; '-' where no sample fell in the stage (it took < 50 ms)."""
    if not peak or not peak[0]:
        return f"{'-':>14} {'-':>7}"
    return f"{peak[0] / 2**20:14,.0f} {peak[1] / 2**20:7,.0f}"

if __name__ == "__main__":
    main()
