"""The GPU smoke test: ``workflows/gpu-smoke.toml`` run three ways, compared with the CPU.

    python benchmarks/gpu_smoke.py                  # on a machine with CUDA
    python benchmarks/gpu_smoke.py --device cpu     # the script itself, every run on the CPU

In a temporary folder (``--keep`` keeps it):

1. ``run all`` of the workflow as shipped: every stage on the device (``cuda``), TF32 off,
   bfloat16 activations, channels-last, loader workers, all three projection methods and the
   training snapshots that the evolution stage compares;
2. a copy of that run with ``tf32 = true`` in every section, each stage after ``train`` run
   again (``run STAGE``: the same weights and snapshots);
3. a copy with every device ``cpu``, each stage after ``train`` run again.

Then it checks that every stage's stamp records the device it ran on (and the activations and
projections stores their own record of it), and prints each stage's seconds and what it
computed with in the three runs, and per store the largest difference of any float array from
the CPU run's (relative to that array's largest value), with TF32 off and on; and how many of
the top-k rows rank the same image. A stage that did not record the device it was given fails
the script (exit 1). Without the device, the first run is refused in one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "gpu-smoke.toml"
RUNS = ("device", "tf32", "cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device of the first two runs "
                        "(default cuda; 'cpu' runs the script's own logic anywhere)")
    parser.add_argument("--keep", action="store_true", help="keep the folder and say where")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    try:
        return smoke(work, args.device)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def smoke(work: Path, device: str) -> int:
    table = tomllib.loads(WORKFLOW.read_text(encoding="utf-8"))
    folders = {name: work / name for name in RUNS}
    first = folders["device"]
    write(first, table, device=device, tf32=False)
    result = pipeline(first, "run", "all")
    if result.returncode:
        print(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
        return result.returncode
    stages = stage_names(first)
    after_train = stages[stages.index("train") + 1:] if "train" in stages else stages
    for name, (on, tf32) in (("tf32", (device, True)), ("cpu", ("cpu", False))):
        shutil.copytree(first, folders[name], symlinks=True)
        write(folders[name], table, device=on, tf32=tf32)
        for stage in after_train:
            result = pipeline(folders[name], "run", stage)
            if result.returncode:
                print(f"[{name}] run {stage} failed:\n{result.stderr[-3000:]}")
                return 1
    problems = check_devices(first, stages, device)
    report_stages(folders, stages)
    report_differences(folders)
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


def write(folder: Path, table: dict, device: str, tf32: bool) -> None:
    """The workflow in ``folder/workflows/smoke.toml`` with every ``device`` set to ``device``
    and every ``tf32`` to ``tf32``."""
    from end_to_end import to_toml  # the benchmarks folder is on sys.path: this is a script

    changed = json.loads(json.dumps(table))
    for section in changed.values():
        if isinstance(section, dict) and "device" in section:
            section["device"], section["tf32"] = device, tf32
    changed["name"] = "smoke"
    target = folder / "workflows" / "smoke.toml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(to_toml(changed), encoding="utf-8")


def pipeline(folder: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", *args, "-w", "workflows/smoke.toml"]
    print(f"[{folder.name}] {' '.join(command[2:])}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        path for path in (str(REPO), os.environ.get("PYTHONPATH")) if path)}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)


def stage_names(folder: Path) -> list[str]:
    """The stages the run has stamps of, in the pipeline's order."""
    from pipeline.stages import list_stages

    return [stage.name for stage in list_stages()
            if (folder / "runs" / "smoke" / "stamps" / f"{stage.name}.json").exists()]


def stamp(folder: Path, stage: str) -> dict:
    return json.loads((folder / "runs" / "smoke" / "stamps" / f"{stage}.json").read_text())


def check_devices(folder: Path, stages: list[str], device: str) -> list[str]:
    """What a stage or store of the first run records of its device, where it is not ``device``
    (its type: ``cuda`` matches ``cuda:0``)."""
    import zarr

    kind = device.split(":")[0]
    problems = []
    for stage in stages:
        compute = stamp(folder, stage).get("compute")
        if stage in ("prepare", "render"):
            continue  # they compute nothing on a device
        if compute is None or not str(compute["device"]).startswith(kind):
            problems.append(f"{stage}'s stamp records {compute} for device {device}")
    run = folder / "runs" / "smoke"
    for store, key in (("activations.zarr", "device"), ("projections.zarr", "device")):
        if (run / store).exists():
            recorded = str(zarr.open_group(run / store, mode="r").attrs.get(key, ""))
            if not recorded.startswith(kind):
                problems.append(f"{store} records device {recorded!r}, not {device}")
    return problems


def report_stages(folders: dict[str, Path], stages: list[str]) -> None:
    print(f"\n{'stage':<12} " + " ".join(f"{name + ' s':>9}" for name in RUNS)
          + "  computed with (device run / tf32 run / cpu run)")
    for stage in stages:
        stamps = [stamp(folder, stage) if (folder / "runs" / "smoke" / "stamps" /
                                            f"{stage}.json").exists() else {}
                  for folder in folders.values()]
        seconds = " ".join(f"{s.get('seconds', float('nan')):>9.1f}" for s in stamps)
        said = " / ".join(describe(s.get("compute")) for s in stamps)
        print(f"{stage:<12} {seconds}  {said}")


def describe(compute: dict | None) -> str:
    if not compute:
        return "-"
    from pipeline.device import Compute

    return Compute.from_json(compute).describe()


def report_differences(folders: dict[str, Path]) -> None:
    """Per store, the largest relative difference of any float array from the CPU run's."""
    cpu = folders["cpu"] / "runs" / "smoke"
    print(f"\n{'store':<22} {'TF32 off vs CPU':>24} {'TF32 on vs CPU':>24}")
    for store in sorted(path.name for path in cpu.glob("*.zarr")):
        cells = [largest_difference(folders[name] / "runs" / "smoke" / store, cpu / store)
                 for name in ("device", "tf32")]
        print(f"{store:<22} " + " ".join(f"{value:>11.2e} {where[:12]:>12}"
                                         for value, where in cells))
    import pandas as pd

    base = pd.read_parquet(cpu / "topk.parquet")
    for name in ("device", "tf32"):
        other = pd.read_parquet(folders[name] / "runs" / "smoke" / "topk.parquet")
        both = base.merge(other, on=["layer", "unit", "rank"], how="outer",
                          suffixes=("_cpu", "_gpu"))
        same = (both["image_id_cpu"] == both["image_id_gpu"]).mean()
        print(f"topk, {name} run: {same:.1%} of {len(both)} rows rank the CPU run's image")


def largest_difference(path: Path, reference: Path) -> tuple[float, str]:
    """max |a - b| / max |b| over the float arrays both stores hold with one shape, and the
    array where it is."""
    import zarr

    if not path.exists():
        return float("nan"), "missing"
    worst, where = 0.0, ""
    ours, theirs = zarr.open_group(path, mode="r"), zarr.open_group(reference, mode="r")
    for name, a, b in paired_arrays(ours, theirs):
        if not np.issubdtype(b.dtype, np.floating) or a.shape != b.shape or not b.size:
            continue
        x, y = np.asarray(a[...], np.float64), np.asarray(b[...], np.float64)
        finite = np.isfinite(x) & np.isfinite(y)
        scale = np.abs(y[finite]).max() if finite.any() else 0.0
        if scale > 0:
            difference = np.abs(x[finite] - y[finite]).max() / scale
            if difference > worst:
                worst, where = difference, name
    return worst, where


def paired_arrays(ours, theirs, prefix: str = ""):
    """(path, our array, their array) for every array both groups hold, at any depth."""
    for name, array in theirs.arrays():
        if name in ours:
            yield f"{prefix}{name}", ours[name], array
    for name, group in theirs.groups():
        if name in ours:
            yield from paired_arrays(ours[name], group, f"{prefix}{name}/")


if __name__ == "__main__":
    sys.exit(main())
