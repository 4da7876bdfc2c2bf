"""Peak memory of the deconv stage's writer at two unit counts of one VGG16-sized layer.

The stage writes ``projections.zarr`` a block of units at a time
(:mod:`pipeline.interp.projection_store`), so its peak memory must not grow with the number of
units. This runs prepare, activations and rank once (random VGG16 weights, ``--images``
generated JPEGs, only ``--layer`` analysed), then, each in a fresh process, projects the top-k
of the first U units for every U in ``--units`` exactly as the stage does (decode once, one pass
for thumbnails and maps, blocks, zarr), and prints each process's peak resident memory, the
growth between the counts, and what the layer's arrays alone would take if they were held whole
(as releases before 0.5.0 did).

Peak resident memory also creeps with the number of allocations when glibc's malloc raises its
mmap threshold as blocks are freed (arena fragmentation, not data held): measured on 2 cores,
24 -> 72 units: +124 MB by default, +15 MB with the threshold fixed by
``MALLOC_MMAP_THRESHOLD_=1048576`` (the layer's arrays held whole: +148 MB). Release 0.11.1,
8 -> 64 units (the defaults): +522 MB by default (+503 MB in 0.11.0, before blocks were
written on a thread beside the projections), +48 MB with the threshold fixed (held whole:
+172 MB).

    python benchmarks/deconv_memory.py                        # VGG16 conv5_3, 8 and 64 units, top 9
    MALLOC_MMAP_THRESHOLD_=1048576 python benchmarks/deconv_memory.py --units 24,72
    python benchmarks/deconv_memory.py --units 64,512 --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from activations import make_images, run

from pipeline.models import get_model

PROJECT = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    import numpy as np, pandas as pd, torch, zarr
    from pipeline.config import load_workflow
    from pipeline.data.decoded import DecodedImages
    from pipeline.device import compute_on
    from pipeline.interp import receptive_fields
    from pipeline.interp.image_pass import ImagePass
    from pipeline.interp.projection_store import (
        BlockProjector,
        ProjectionPlan,
        create_store,
        layer_plans,
    )
    from pipeline.ranking import read_rank_meta
    from pipeline.labelled import ImageCoords
    from pipeline import catalog
    from pipeline.layout import RunLayout
    from pipeline.run_inputs import analysed_model, analysed_pixels, preprocessing
    from pipeline.schemas import Topk
    workflow_file, units, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    workflow = load_workflow(Path(workflow_file))
    layout = RunLayout(Path("."), workflow.name)
    device, _ = compute_on(workflow.deconv.device, tf32=workflow.deconv.tf32,
                           deterministic=True)  # as the stage sets it
    classes = catalog.CLASSES.read(catalog.CLASSES.path(layout))
    model = analysed_model(workflow, layout, classes, device)
    prep = preprocessing(workflow)
    activations = catalog.ACTIVATIONS.read(catalog.ACTIVATIONS.path(layout))
    fields = receptive_fields(model, (prep.input_size, prep.input_size))
    layer = layer_plans(activations, fields, units)[0]
    label, meta = layer.label, activations[layer.label].attrs
    topk = catalog.TOPK.read(catalog.TOPK.path(layout))
    rows = topk[(topk[Topk.layer] == label) & (topk[Topk.unit] < units)]
    out = Path(out)
    top_k = read_rank_meta(layout.topk).top_k
    manifest = catalog.MANIFEST.read(catalog.MANIFEST.path(layout))
    create_store(out, [layer], ProjectionPlan(tuple(workflow.deconv.methods), top_k,
                                              prep.input_size,
                                              (label,)), str(device), rows,
                 ImageCoords.of_run(manifest, classes), len(prep.mean))
    images = analysed_pixels(workflow, layout, manifest)
    start = time.perf_counter()
    decoded = DecodedImages.build(out / "decoded", rows["image_id"].to_numpy(), images,
                                  prep.input_size, channels=len(prep.mean))
    per_image = ImagePass.build(out / "image_pass", model, [layer], rows, top_k, decoded,
                                prep.normalise(), workflow.deconv.batch_size)
    job = BlockProjector(model, workflow.deconv.methods, decoded, per_image, prep.normalise(),
                         top_k, workflow.deconv.batch_size)
    job.layer(out, layer, rows)
    seconds = time.perf_counter() - start
    tile = zarr.open_group(out, mode="r")[label].attrs["tile"]
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "projections": len(rows) * len(workflow.deconv.methods),
                      "seconds": seconds, "tile": tile, "map": [meta["height"], meta["width"]]}))
""")


def whole_layer_mb(units: int, top_k: int, methods: int, tile: list[int], fmap: list[int]) -> float:
    """What the layer's arrays take in memory when held whole (projections float16, patches
    and thumbnails uint8, maps float32)."""
    cell = tile[0] * tile[1] * 3
    per_rank = methods * cell * 2 + cell + 64 * 64 * 3 + fmap[0] * fmap[1] * 4 + methods * 4 + 16
    return units * top_k * per_rank / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--layer", default="features.28", help="module name (VGG16: conv5_3)")
    parser.add_argument("--units", default="8,64", help="unit counts, comma-separated")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=9)
    parser.add_argument("--batch-size", type=int, default=8, help="[deconv] batch_size")
    parser.add_argument("--methods", default="deconvnet", help="comma-separated")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    counts = [int(n) for n in args.units.split(",")]
    methods = [m for m in args.methods.split(",") if m]

    with tempfile.TemporaryDirectory(prefix="bench-deconv-memory-") as scratch:
        base = Path(scratch)
        torch.manual_seed(0)
        checkpoint = base / "model.pt"
        torch.save(get_model(args.model).state_dict(), checkpoint)
        make_images(base / "data", args.images, 224)
        workflow = base / "bench.toml"
        workflow.write_text(textwrap.dedent(f"""
            [data]
            root = "{base / 'data'}"
            [model]
            name = "{args.model}"
            checkpoint = "{checkpoint}"
            [activations]
            layers = ["{args.layer}"]
            batch_size = 16
            device = "{args.device}"
            [rank]
            top_k = {args.top_k}
            [deconv]
            methods = {json.dumps(methods)}
            batch_size = {args.batch_size}
            device = "{args.device}"
        """))
        run(["-m", "pipeline", "run", "rank", "-w", str(workflow)], cwd=base)
        rows = []
        for units in counts:
            out = run(["-c", PROJECT, str(workflow), str(units), str(base / f"p{units}.zarr")],
                      cwd=base)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            whole = whole_layer_mb(units, args.top_k, len(methods), result["tile"], result["map"])
            rows.append((units, result["peak_mb"]))
            print(f"{units:>5} units: {result['projections']:>6} projections in "
                  f"{result['seconds']:6.1f} s, peak memory {result['peak_mb']:7.0f} MB "
                  f"(the layer's arrays held whole: {whole:6.0f} MB)", flush=True)
    growth = rows[-1][1] - rows[0][1]
    print(f"{args.model} {args.layer}, top-{args.top_k}, batch {args.batch_size}: peak memory "
          f"from {rows[0][0]} to {rows[-1][0]} units: {growth:+.0f} MB "
          f"({rows[-1][1] / rows[0][1] - 1:+.1%})")


if __name__ == "__main__":
    sys.exit(main())
