"""Projections per second of the deconvnet engine against a Captum loop, measured in one run.

The baseline calls Captum's ``NeuronDeconvolution`` once per projection, as existing tools do.
Both get the same model (random weights), the same images and the same requests: for each of
the first ``--units`` units of every conv layer, the ``--per-unit`` images where the unit peaks,
at the position of its peak. The engine receives the requests of one layer at a time, ordered by
image, as the deconv stage hands them over. A sample of projections is compared to check that
both compute the same thing (up to the positive scale of the seed).

    python benchmarks/deconv.py                       # torchvision AlexNet, 9 x 32 x 5 projections
    python benchmarks/deconv.py --model vgg16 --units 8 --device cuda
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from captum.attr import NeuronDeconvolution

from pipeline.device import resolve_device
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
    parser.add_argument("--batch-size", type=int, default=64, help="engine batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 convolutions on the GPU (faster, but the comparison with "
                        "Captum is then only as close as TF32's 10-bit mantissa)")
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32

    torch.manual_seed(0)
    device = resolve_device(args.device)
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
