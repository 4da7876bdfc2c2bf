"""The deconv stage against its engine, for ``benchmarks/deconv.py --stage`` (which see): a real
run set up in a temporary folder, then the stage's work and the bare engine on the same requests,
timed in one process."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import imagenet_like  # the benchmarks folder is on sys.path: this is a script's module
import numpy as np
import pandas as pd
import torch

from pipeline.device import compute_on
from pipeline.interp import Projector
from pipeline.interp.projection_store import LayerPlan
from pipeline.models import get_model

REPO = Path(__file__).resolve().parents[1]


def stage_against_engine(args: argparse.Namespace) -> None:
    """Set up a real run in a temporary folder, then time the stage's work and its engine."""
    work = Path(tempfile.mkdtemp(prefix="bench-deconv-stage-"))
    try:
        made = imagenet_like.generate(args.data or work / "data", args.stage_images)
        print(imagenet_like.describe(made), flush=True)
        workflow = write_run(work, made.root.resolve(), args)
        clock = time.perf_counter()
        pipeline_cli(["run", "rank", "-w", str(workflow)], cwd=work)
        print(f"activations and rank: {time.perf_counter() - clock:.1f} s", flush=True)
        run = StageRun(workflow, work)
        print(f"{args.model} on {run.device}, {torch.get_num_threads()} CPU threads: "
              f"{run.projections} projections of {len(run.layers)} layers, "
              f"{run.distinct} distinct top images, [deconv] batch_size {run.batch_size}, "
              f"num_workers {run.workflow.deconv.num_workers}", flush=True)
        run.warm_up()
        timings = []
        for repeat in range(args.repeats):
            engine_s = run.time_engine()
            stage_s, parts = run.time_stage(work / f"projections-{repeat}.zarr")
            timings.append((stage_s, engine_s))
            n = run.projections
            print(f"engine : {engine_s:8.2f} s  {n / engine_s:9.1f} projections/s")
            print(f"stage  : {stage_s:8.2f} s  {n / stage_s:9.1f} projections/s   (decode "
                  f"{parts['decode']:.1f} s, thumbnails and maps {parts['image pass']:.1f} s, "
                  f"engine {parts['engine']:.1f} s, the rest {parts['rest']:.1f} s: crops, "
                  f"patches, zarr)")
            print(f"ratio  : {engine_s / stage_s:.2f} (stage over engine, projections/s)",
                  flush=True)
        worst = run.check(work / "projections-0.zarr")
        print(f"max |stored - engine| / max |engine|, one batch per layer: {worst:.1e} "
              "(float16 storage)")
        if args.repeats > 1:
            stage_s, engine_s = (min(t[i] for t in timings) for i in (0, 1))
            print(f"best of {args.repeats}: stage {run.projections / stage_s:.1f}, engine "
                  f"{run.projections / engine_s:.1f} projections/s, ratio "
                  f"{engine_s / stage_s:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_run(work: Path, data: Path, args: argparse.Namespace) -> Path:
    """A workflow over ``data`` with the model's random weights saved as its checkpoint."""
    torch.manual_seed(0)
    checkpoint = work / "model.pt"
    torch.save(get_model(args.model).state_dict(), checkpoint)
    workers = "" if args.workers is None else f"num_workers = {args.workers}"
    workflow = work / "bench.toml"
    workflow.write_text(textwrap.dedent(f"""
        [data]
        root = "{data}"
        [model]
        name = "{args.model}"
        checkpoint = "{checkpoint}"
        image_size = {args.image_size}
        resize_size = {round(args.image_size * 256 / 224)}
        [activations]
        device = "{args.device}"
        num_workers = {min(4, (os.cpu_count() or 1) - 1)}
        [rank]
        top_k = {args.top_k}
        [deconv]
        batch_size = {args.batch_size}
        device = "{args.device}"
        tf32 = {"true" if args.tf32 else "false"}
        {workers}
    """))
    return workflow


def pipeline_cli(command: list[str], cwd: Path) -> None:
    """Run ``python -m pipeline COMMAND`` with this checkout's package; stop on failure."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run([sys.executable, "-m", "pipeline", *command], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"python -m pipeline {' '.join(command)} failed:\n"
                         f"{result.stderr[-3000:]}")


class StageRun:
    """The deconv stage's inputs read from a finished rank, as the stage reads them."""

    def __init__(self, workflow_file: Path, work: Path) -> None:
        from pipeline import catalog
        from pipeline.config import load_workflow
        from pipeline.data.decoded import DecodedImages
        from pipeline.interp import receptive_fields
        from pipeline.interp.projection_meta import ProjectionPlan
        from pipeline.interp.projection_store import layer_plans
        from pipeline.labelled import ImageCoords
        from pipeline.layout import RunLayout
        from pipeline.ranking import read_rank_meta
        from pipeline.run_inputs import analysed_model, analysed_pixels, preprocessing

        self.workflow = workflow = load_workflow(workflow_file)
        layout = RunLayout(work, workflow.name)
        self.device, _ = compute_on(workflow.deconv.device, tf32=workflow.deconv.tf32,
                                    deterministic=True)  # as the stage sets it
        classes = catalog.CLASSES.read(catalog.CLASSES.path(layout))
        manifest = catalog.MANIFEST.read(catalog.MANIFEST.path(layout))
        self.model = analysed_model(workflow, layout, classes, self.device)
        prep = preprocessing(workflow)
        self.normalise, self.channels = prep.normalise(), len(prep.mean)
        self.top_maps = catalog.TOP_MAPS.path(layout)
        self.layers = layer_plans(catalog.ACTIVATIONS.read(catalog.ACTIVATIONS.path(layout)),
                                  receptive_fields(self.model, (prep.input_size,) * 2))
        self.topk = catalog.TOPK.read(catalog.TOPK.path(layout))
        self.top_k = read_rank_meta(catalog.TOPK.path(layout)).top_k
        self.plan = ProjectionPlan(tuple(workflow.deconv.methods), self.top_k, prep.input_size,
                                   tuple(layer.label for layer in self.layers))
        self.pixels = analysed_pixels(workflow, layout, manifest)
        self.coords = ImageCoords.of_run(manifest, classes)
        self.batch_size = workflow.deconv.batch_size
        self.projections = len(self.topk) * len(self.plan.methods)
        ids = np.unique(self.topk["image_id"].to_numpy())
        self.distinct = len(ids)
        # the engine's images, decoded beforehand (untimed)
        self.decoded = DecodedImages.build(work / "engine-images", ids, self.pixels,
                                           prep.input_size, workflow.deconv.num_workers,
                                           channels=self.channels)

    def batches(self, first_only: bool = False) -> Iterator[tuple[LayerPlan, pd.DataFrame]]:
        """Each batch of requests (rank's rows) with its layer, as the stage hands them over:
        layer by layer, a block of units at a time, by image within the block (``first_only``:
        the first batch of each layer)."""
        from pipeline.interp.projection_store import block_units

        step = block_units(self.top_k, self.batch_size)
        for layer in self.layers:
            rows = self.topk[self.topk["layer"] == layer.label]
            for batch in self._blocks(rows, layer.channels, step):
                yield layer, batch
                if first_only:
                    break

    def _blocks(self, rows: pd.DataFrame, units: int, step: int) -> Iterator[pd.DataFrame]:
        for start in range(0, units, step):
            block = rows[(rows["unit"] >= start) & (rows["unit"] < start + step)]
            block = block.sort_values(["image_id", "unit", "rank"])
            for begin in range(0, len(block), self.batch_size):
                yield block.iloc[begin:begin + self.batch_size]

    def inputs(self, batch: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The engine's arguments for ``batch``: one image per request, units, positions."""
        pixels = torch.from_numpy(self.decoded.read(batch["image_id"].to_numpy()))
        return (self.normalise(pixels.to(self.device)),
                torch.tensor(batch["unit"].to_numpy(), device=self.device),
                torch.tensor(batch[["y", "x"]].to_numpy(), device=self.device))

    def projectors(self) -> list[Projector]:
        return [Projector(self.model, method=method, batch_size=self.batch_size)
                for method in self.plan.methods]

    def warm_up(self) -> None:
        """One batch per layer through throwaway projectors (allocator, kernels, libraries)."""
        projectors = self.projectors()
        for layer, batch in self.batches(first_only=True):
            images, units, positions = self.inputs(batch)
            for projector in projectors:
                projector.project(images, layer.module, units, positions)

    def time_engine(self) -> float:
        """Seconds of ``Projector.project`` alone over every batch."""
        projectors, seconds = self.projectors(), 0.0
        for layer, batch in self.batches():
            images, units, positions = self.inputs(batch)
            synchronise(self.device)
            clock = time.perf_counter()
            for projector in projectors:
                projector.project(images, layer.module, units, positions)
            synchronise(self.device)
            seconds += time.perf_counter() - clock
        return seconds

    def time_stage(self, staged: Path) -> tuple[float, dict[str, float]]:
        """Seconds of ``write_projections`` into ``staged``, and where they went."""
        from pipeline.data.decoded import DecodedImages
        from pipeline.interp.deconv_run import write_projections
        from pipeline.interp.image_pass import ImagePass

        parts: dict[str, float] = {}
        with timing(DecodedImages, "build", "decode", parts), \
                timing(ImagePass, "build", "image pass", parts), \
                timing(Projector, "project", "engine", parts, self.device):
            clock = time.perf_counter()
            write_projections(staged, self.model, self.layers, self.plan, self.topk,
                              self.pixels, self.coords, self.normalise, self.batch_size,
                              self.workflow.deconv.num_workers, str(self.device), self.channels,
                              self.top_maps)
            seconds = time.perf_counter() - clock
        parts["rest"] = seconds - sum(parts.values())
        return seconds, parts

    def check(self, store: Path) -> float:
        """Largest difference between the stored projections and the engine's, relative to
        the largest engine value, on the first batch of each layer and method."""
        import zarr

        from pipeline.interp import field_tile

        found = zarr.open_group(store, mode="r")
        worst = 0.0
        for layer, batch in self.batches(first_only=True):
            group = found[layer.label]
            tile = tuple(group.attrs["tile"])
            images, units, positions = self.inputs(batch)
            for m, projector in enumerate(self.projectors()):
                projected = projector.project(images, layer.module, units,
                                              positions).cpu().numpy()
                for j, row in enumerate(batch.itertuples(index=False)):
                    box = layer.field.box(int(row.y), int(row.x))
                    exact = field_tile(projected[j].transpose(1, 2, 0), box, tile, 0.0)
                    stored = group["projections"][m, row.unit, row.rank].astype(np.float32) \
                        * group["projection_scale"][m, row.unit, row.rank]
                    worst = max(worst, float(np.abs(stored - exact).max()
                                             / max(np.abs(exact).max(), 1e-30)))
        return worst


@contextlib.contextmanager
def timing(owner: type, name: str, key: str, into: dict[str, float],
           device: torch.device | None = None) -> Iterator[None]:
    """Add the seconds spent in ``owner.name`` to ``into[key]`` while the block runs."""
    stored, original = vars(owner)[name], getattr(owner, name)  # (a classmethod stays one)
    into.setdefault(key, 0.0)

    def timed_call(*args, **kwargs):
        clock = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if device is not None:
                synchronise(device)
            into[key] += time.perf_counter() - clock

    setattr(owner, name, timed_call)
    try:
        yield
    finally:
        setattr(owner, name, stored)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
