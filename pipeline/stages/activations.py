"""Stage ``activations``: runs the model over every analysed image, storing unit summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.progress import progress
from pipeline.stages.context import StageContext
from pipeline.stages.inputs import analysed_images, analysed_model
from pipeline.stages.registry import register_stage

if TYPE_CHECKING:
    import torch


@register_stage("activations", inputs=("prepare", "train"), sections=("model", "activations"))
def activations(ctx: StageContext) -> None:
    """record each unit's max, argmax and mean over every image"""
    import torch
    from torch.utils.data import DataLoader

    from pipeline.device import resolve_device
    from pipeline.inference.recorder import SummaryRecorder
    from pipeline.inference.store import completed_chunks, create_store, mark_completed, write_chunk
    from pipeline.interp import analysable_layers

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.activations
    device = resolve_device(spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    size = workflow.model.image_size
    layers = analysable_layers(model, (size, size), names=list(spec.layers) or None)
    top = min(5, len(pd.read_parquet(layout.classes)))

    staged = ctx.output(layout.activations, resumable=True)
    meta = [{"label": layer.label, "module": layer.name, "channels": layer.channels,
             "height": layer.out_shape[1], "width": layer.out_shape[2],
             "receptive_field": list(layer.receptive_field.size)} for layer in layers]
    store = create_store(staged, len(manifest), spec.chunk_size, meta, top)
    done = completed_chunks(staged)
    n_chunks = -(-len(manifest) // spec.chunk_size)
    todo = [chunk for chunk in range(n_chunks) if chunk not in done]
    if done:
        print(f"[activations] resuming: {len(done)} of {n_chunks} chunks already written")

    dataset = analysed_images(workflow, layout, manifest)
    batches = _chunk_batches(todo, spec.chunk_size, spec.batch_size, len(manifest))
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=spec.num_workers,
                        pin_memory=device.type == "cuda")
    labels = manifest["label"].to_numpy(np.int32)
    buffer: dict[str, list[np.ndarray]] = {}
    names = {layer.name: layer.label for layer in layers}
    with SummaryRecorder(model, list(names)) as recorder, torch.inference_mode():
        for images, _, index in progress(loader, "activations", total=len(batches), unit="batch"):
            logits = model(images.to(device, non_blocking=True))
            prob, pred = logits.float().softmax(dim=1).topk(top, dim=1)
            _append(buffer, "pred", pred.int())
            _append(buffer, "prob", prob)
            for name, label in names.items():
                summary = recorder.summaries[name]
                for key in ("max", "argmax", "mean"):
                    _append(buffer, f"{label}/{key}", getattr(summary, key))
            first = int(index[0])
            chunk = first // spec.chunk_size
            chunk_end = min((chunk + 1) * spec.chunk_size, len(manifest))
            if int(index[-1]) + 1 == chunk_end:
                start = chunk * spec.chunk_size
                arrays = {key: np.concatenate(parts) for key, parts in buffer.items()}
                arrays["label"] = labels[start:chunk_end]
                write_chunk(store, start, arrays)
                done.add(chunk)
                mark_completed(staged, done)
                buffer.clear()
    _report_accuracy(store, labels)


def _chunk_batches(chunks: list[int], chunk_size: int, batch_size: int,
                   n_images: int) -> list[list[int]]:
    """Batches of image indices that never straddle a chunk, so chunks are written whole."""
    batches = []
    for chunk in chunks:
        start, end = chunk * chunk_size, min((chunk + 1) * chunk_size, n_images)
        batches.extend(list(range(i, min(i + batch_size, end))) for i in range(start, end,
                                                                                batch_size))
    return batches


def _append(buffer: dict[str, list[np.ndarray]], key: str, values: torch.Tensor) -> None:
    buffer.setdefault(key, []).append(values.cpu().numpy())


def _report_accuracy(store, labels: np.ndarray) -> None:
    pred = np.asarray(store["pred"][:])
    top1 = float((pred[:, 0] == labels).mean())
    top5 = float((pred == labels[:, None]).any(axis=1).mean())
    store.attrs.update({"top1": top1, "top5": top5})
    print(f"[activations] top-1 {top1:.3f}, top-{pred.shape[1]} {top5:.3f} on {len(labels)} images")
