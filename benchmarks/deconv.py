"""Projections per second of the deconvnet engine, measured in one run against a Captum loop
(the default) or against the deconv stage that drives it (``--stage``).

Engine against Captum. The baseline calls Captum's ``NeuronDeconvolution`` once per projection,
as existing tools do. Both get the same model (random weights), the same images and the same
requests: for each of the first ``--units`` units of every conv layer, the ``--per-unit`` images
where the unit peaks, at the position of its peak. The engine receives the requests of one layer
at a time, ordered by image, as the deconv stage hands them over. A sample of projections is
compared to check that both compute the same thing (up to the positive scale of the seed).

Stage against engine (``--stage``). A real run: ``--stage-images`` ImageNet-like JPEGs
(``imagenet_like.py``; ``--data DIR`` keeps them for the next run), the model with random
weights, its activations and rank stages run as the pipeline runs them. Then, in this process,
(a) the deconv stage's work, ``write_projections`` as the stage calls it (decoding the top
images, the pass for thumbnails and maps, projecting, cropping and writing ``projections.zarr``)
and (b) the bare engine, ``Projector.project`` on exactly the same top-k requests in the batches
the stage hands it (layer by layer, a block of units at a time, by image), on images decoded
and normalised beforehand, untimed. Both start from new projectors after one untimed warm-up
batch per layer. It prints the projections/s of each, the ratio stage / engine (1.0: the stage
costs nothing beyond its engine), where the stage's time went, and the largest difference
between the stored projections and the engine's on a sample (code: ``deconv_stage.py``).

    python benchmarks/deconv.py                       # torchvision AlexNet, 9 x 32 x 5 projections
    python benchmarks/deconv.py --model vgg16 --units 8 --device cuda
    python benchmarks/deconv.py --stage               # AlexNet over 1,000 generated images
    python benchmarks/deconv.py --stage --stage-images 300 --repeats 2 --data imagenet-like-300
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from pipeline.device import compute_on, set_tf32
from pipeline.interp import Projector, analysable_layers
from pipeline.models import get_model


def requests_for(model, layers, images, units, per_unit):
    """(layer name, image index, unit, y, x) of each unit's top images, at its peak position."""
    found = []
    for layer in layers:
        captured = {}
        module = model.get_submodule(layer.name)
        handle = module.register_forward_hook(lambda m, a, out, into=captured: into.update(out=out))
        with torch.no_grad():
            model(images)
        handle.remove()
        fmap = captured["out"][:, :units].flatten(2)  # [N, U, HW]
        peak, where = fmap.max(dim=2)
        for unit in range(fmap.shape[1]):
            values, top = peak[:, unit].topk(per_unit)
            for image in top[values > 0].tolist():  # as the rank stage: only positive peaks
                y, x = divmod(int(where[image, unit]), layer.out_shape[2])
                found.append((layer.name, image, unit, y, x))
    return found


def run_engine(model, images, requests, batch_size):
    projector = Projector(model, method="deconvnet", batch_size=batch_size)
    results = {}
    for name in dict.fromkeys(r[0] for r in requests):
        mine = sorted((r for r in requests if r[0] == name), key=lambda r: (r[1], r[2]))
        index = torch.tensor([r[1] for r in mine])
        units = torch.tensor([r[2] for r in mine])
        positions = torch.tensor([[r[3], r[4]] for r in mine])
        projected = projector.project(images[index], name, units, positions)
        results.update(zip(mine, projected, strict=True))
    return results


def run_captum(model, images, requests):
    from captum.attr import NeuronDeconvolution

    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about hooks on every call
        for request in requests:
            name, image, unit, y, x = request
            method = NeuronDeconvolution(model, model.get_submodule(name))
            results[request] = method.attribute(images[image:image + 1],
                                                neuron_selector=(unit, y, x))[0].detach()
    return results


def timed(func, *args, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = func(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=32, help="distinct input images")
    parser.add_argument("--units", type=int, default=32, help="units per layer")
    parser.add_argument("--per-unit", type=int, default=9, help="projections per unit")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="engine batch size ([deconv] batch_size with --stage)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 convolutions on the GPU (faster, but the comparison with "
                        "Captum is then only as close as TF32's 10-bit mantissa)")
    parser.add_argument("--stage", action="store_true",
                        help="measure the deconv stage against its engine instead of the engine "
                        "against Captum")
    parser.add_argument("--stage-images", type=int, default=1000,
                        help="with --stage: images generated and analysed")
    parser.add_argument("--top-k", type=int, default=9, help="with --stage: [rank] top_k")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --stage: [deconv] num_workers (default: the workflow's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --stage: measure engine and stage this many times, in turn")
    parser.add_argument("--data", type=Path, default=None,
                        help="with --stage: folder of the generated images, kept and reused by "
                        "the next run with the same --stage-images (default: a temporary one)")
    args = parser.parse_args()
    set_tf32(args.tf32)  # off by default, as the stage (and [deconv] tf32 = true: on)
    if args.stage:
        from deconv_stage import stage_against_engine  # the benchmarks folder is on sys.path

        stage_against_engine(args)
    else:
        engine_against_captum(args)


def engine_against_captum(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    device, _ = compute_on(args.device, tf32=args.tf32, deterministic=True)  # as the stage
    model = get_model(args.model).eval().to(device)
    size = (args.image_size, args.image_size)
    images = torch.randn(args.images, 3, *size, generator=torch.Generator().manual_seed(1))
    images = images.to(device)
    layers = analysable_layers(model, size)
    requests = requests_for(model, layers, images, args.units, args.per_unit)
    print(f"{args.model} ({len(layers)} layers) at {size[0]} px on {device}, "
          f"{torch.get_num_threads()} CPU threads: {len(requests)} projections")

    run_engine(model, images, requests[:4], args.batch_size)  # warm-up (tracing, allocator)
    engine, engine_s = timed(run_engine, model, images, requests, args.batch_size, device=device)
    captum, captum_s = timed(run_captum, model, images, requests, device=device)

    worst = 0.0
    for request in requests[:: max(1, len(requests) // 50)]:
        a, b = engine[request], captum[request]
        a, b = a / a.abs().max().clamp_min(1e-30), b / b.abs().max().clamp_min(1e-30)
        worst = max(worst, float((a - b).abs().max()))
    engine_rate, captum_rate = len(requests) / engine_s, len(requests) / captum_s
    print(f"engine : {engine_s:8.2f} s  {engine_rate:9.1f} projections/s")
    print(f"captum : {captum_s:8.2f} s  {captum_rate:9.1f} projections/s")
    print(f"ratio  : {engine_rate / captum_rate:.2f}x (engine over the Captum loop)")
    print(f"max abs difference after normalising by max |p|, 50 sampled projections: {worst:.1e}")


if __name__ == "__main__":
    main()
