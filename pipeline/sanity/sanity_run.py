"""The cascade's figures: each sampled top activation projected through the trained network and
through each step of the cascade (:mod:`pipeline.sanity.randomise`), and the two compared.

The sample: per layer, ``units`` of its live units picked evenly over them (all when it has
fewer), and each one's top ``images`` ranks: the image, the unit and the position that the
deconv stage projected. The trained projection is computed again here, by the same code on the
same network object as the randomised ones (only the weights differ), so that the two are
cropped to the same receptive-field box and differ by nothing but the weights; the stored
``projections.zarr`` keeps float16, which would already make "identical" less than 1.

The seed of a projection is the activation's own value (the projector's rule). Under random
weights the same unit at the same position is often zero, and a seed of zero projects nothing
whatever the method: the question would not be asked. So for this stage the seed is the
activation where it is positive and 1 where it is not (:func:`positive_seeds`); every rule is
positively homogeneous, so the seed's size only scales a picture, and the figures compare
shapes. A rule that masks by the forward activation (gradient, guided backprop) still returns
nothing through a unit that is off there: such a projection is *empty*, counted in ``empty``
and left out of the means (``n`` counts the rest).

A projection reaches back only to the modules called before its layer (the forward pass stops
there), so a step that randomises only modules above a layer leaves its projections exactly as
trained: those rows are written as 1 without projecting (``every_step=True`` projects them, as
the tests do to check it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from pipeline.interp.projection_store import LayerPlan
from pipeline.interp.projector import Projector
from pipeline.interp.receptive_field import field_tile
from pipeline.models.evaluation import evaluating
from pipeline.sanity.randomise import (
    Cascade,
    CascadeStep,
    Randomiser,
    cascade_steps,
    forward_order,
    reaches,
    reset_weights,
)
from pipeline.sanity.similarity import magnitude, spearman, ssim, valid_region
from pipeline.schemas import Sanity

#: The columns of ``sanity.parquet``, one row per layer, method and step (its schema's).
CASCADE_COLUMNS = tuple(Sanity.names())


@dataclass(frozen=True)
class SanityPlan:
    """What the stage computes: the projection methods, the sample (``units`` per layer, their
    top ``images`` ranks), the seed of the new weights and the projector's batch size."""

    methods: tuple[str, ...]
    units: int
    images: int
    seed: int
    batch_size: int = 64


@dataclass(frozen=True)
class Pictures:
    """The analysed images: ``pixels(image_id)`` the network's uint8 crop ``[C, H, W]``,
    ``normalise`` what turns a batch of them into the network's input, ``size`` its side."""

    pixels: Callable[[int], Tensor]
    normalise: Callable[[Tensor], Tensor]
    size: int


@dataclass
class CascadeResult:
    """The cascade's rows (:data:`CASCADE_COLUMNS`) and per layer label the top-1 projection
    of every live unit under full randomisation: ``projections`` float16
    ``[method, unit, tile_y, tile_x, channel]`` divided by ``projection_scale``
    ``[method, unit]``, and the ``image_id`` ``[unit]`` projected (-1: a dead unit)."""

    table: pd.DataFrame
    randomised: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    steps: tuple[CascadeStep, ...] = ()


def evenly(values: np.ndarray, count: int) -> np.ndarray:
    """``count`` of ``values`` spread evenly from the first to the last (all when fewer)."""
    values = np.asarray(values)
    if len(values) <= count:
        return values
    return values[np.unique(np.round(np.linspace(0, len(values) - 1, count)).astype(int))]


def sample_rows(topk: pd.DataFrame, units: int, images: int) -> pd.DataFrame:
    """A layer's sample: the top ``images`` ranks of ``units`` live units picked evenly (a unit
    with any top image is live; a dead one has none)."""
    chosen = evenly(np.unique(topk["unit"].to_numpy()), units)
    rows = topk[topk["unit"].isin(chosen) & (topk["rank"] < images)]
    return rows.sort_values(["unit", "rank"], ignore_index=True)


def run_cascade(model: nn.Module, layers: Sequence[LayerPlan], topk: pd.DataFrame,
                plan: SanityPlan, pictures: Pictures, randomise: Randomiser = reset_weights,
                every_step: bool = False, total: Callable[[int], object] = lambda n: None,
                advance: Callable[[int], object] = lambda n: None) -> CascadeResult:
    """The cascade's figures for every layer and method of ``plan`` (module doc), with each
    live unit's top-1 projection under full randomisation. ``topk`` is rank's table;
    ``total(n)`` is told how many projections it will make, once, before the first, and
    ``advance(n)`` of every ``n`` made."""
    probe = _input(pictures, [int(topk["image_id"].iloc[0])], model) if len(topk) else None
    if probe is None:
        return CascadeResult(pd.DataFrame(columns=list(CASCADE_COLUMNS)))
    order = forward_order(model, probe, [layer.module for layer in layers])
    steps = cascade_steps(order, [(layer.label, layer.module) for layer in layers])
    cascade = Cascade(model, steps, plan.seed, randomise)
    # One projector per method for every step: what it caches (the layers' geometry, the
    # crops' self-check, the rules' check) follows from the architecture, not the weights.
    projectors = {method: Projector(cascade.network, method=method, batch_size=plan.batch_size)
                  for method in plan.methods}
    result = CascadeResult(pd.DataFrame(), steps=tuple(steps))
    requests = {}
    for layer in layers:
        rows = topk[topk["layer"] == layer.label]
        sample = sample_rows(rows, plan.units, plan.images)
        top = rows[(rows["rank"] == 0) & ~rows["unit"].isin(sample["unit"])]
        requests[layer.label] = (pd.concat([sample, top], ignore_index=True), len(sample))

    def computed(step: CascadeStep, layer: LayerPlan) -> bool:
        return step is steps[-1] or every_step or reaches(step, order, layer.module)

    total(len(plan.methods) * sum(
        n + sum((len(rows) if step is steps[-1] else n) * computed(step, layer)
                for step in steps)
        for layer, (rows, n) in zip(layers, requests.values(), strict=True)))
    table = []
    decoded = _Decoded(pictures, [rows["image_id"] for rows, _ in requests.values()])
    for layer in layers:
        rows, n_sample = requests[layer.label]
        job = _LayerJob(layer, pictures, plan.batch_size, probe, rows, n_sample, advance,
                        decoded.images(rows["image_id"]))
        cascade.at(None)
        trained = {method: job.maps(job.project(projectors[method], sample=True))
                   for method in plan.methods}
        for step in steps:
            full = step is steps[-1]
            network = cascade.at(step) if computed(step, layer) else None
            for method in plan.methods:
                if network is None:
                    scores = [(1.0, 1.0) if m is not None else None for m in trained[method]]
                    table.append(_row(layer.label, method, step, full, scores, trained[method]))
                    continue
                tiles = job.project(projectors[method], sample=not full)
                scores = [_compare(a, b) for a, b in zip(trained[method], job.maps(tiles),
                                                         strict=True)]
                table.append(_row(layer.label, method, step, full, scores, trained[method]))
                if full:
                    job.keep_top(tiles, method, plan.methods, result)
    result.table = pd.DataFrame(table, columns=list(CASCADE_COLUMNS))
    return result


class _Decoded:
    """The layers' images, each decoded once for all the layers that project it (a unit's top
    image is often another layer's too: on AlexNet at N = 5,000 the five layers' 912 decodes
    were of 583 images), and let go after the last of them."""

    def __init__(self, pictures: Pictures, per_layer: Sequence[pd.Series]) -> None:
        self.pictures = pictures
        self.uses = Counter(int(i) for ids in per_layer for i in np.unique(ids))
        self.kept: dict[int, Tensor] = {}

    def images(self, ids: pd.Series) -> dict[int, Tensor]:
        """Image id -> pixels of one layer's ``ids``; call once per layer, in order."""
        found = {}
        for i in (int(i) for i in np.unique(ids)):
            found[i] = self.kept[i] if i in self.kept else self.pictures.pixels(i)
            self.uses[i] -= 1
            if self.uses[i]:
                self.kept[i] = found[i]
            else:
                self.kept.pop(i, None)
        return found


class _LayerJob:
    """One layer's requests (the sample first, then the other live units' top-1) projected and
    cropped to the layer's tile, from its images decoded beforehand (:class:`_Decoded`)."""

    def __init__(self, layer: LayerPlan, pictures: Pictures, batch_size: int, probe: Tensor,
                 rows: pd.DataFrame, n_sample: int, advance: Callable[[int], object],
                 images: dict[int, Tensor]) -> None:
        self.layer, self.pictures, self.batch_size = layer, pictures, batch_size
        self.rows, self.n_sample, self.advance = rows, n_sample, advance
        self.tile = layer.field.tile_hw((pictures.size, pictures.size))
        self.images = images
        self.probe = probe
        self.boxes = [layer.field.box(int(y), int(x)) for y, x in zip(rows["y"], rows["x"],
                                                                       strict=True)]

    def project(self, projector: Projector, sample: bool) -> np.ndarray:
        """Tiles ``[request, tile_y, tile_x, channel]`` float32 of the sample's requests (or
        of every request) by ``projector``, on its network as it is now."""
        rows = self.rows.iloc[:self.n_sample] if sample else self.rows
        network = projector.model
        device = next(network.parameters(), torch.empty(0)).device
        tiles = []
        with positive_seeds(network, self.layer.module, self.probe):
            for start in range(0, len(rows), self.batch_size):
                batch = rows.iloc[start:start + self.batch_size]
                # each distinct image normalised once, shared by its requests
                ids, of_request = np.unique(batch["image_id"].to_numpy(), return_inverse=True)
                x = self.pictures.normalise(torch.stack([self.images[int(i)] for i in ids])
                                            .to(device))
                units = torch.tensor(batch["unit"].to_numpy(), dtype=torch.long, device=device)
                positions = torch.tensor(batch[["y", "x"]].to_numpy(), dtype=torch.long,
                                         device=device)
                projected = projector.project(x, self.layer.module, units, positions,
                                              torch.from_numpy(of_request).to(device)) \
                    .cpu().numpy().transpose(0, 2, 3, 1)
                for j in range(len(batch)):
                    tiles.append(field_tile(projected[j], self.boxes[start + j], self.tile, 0.0))
                self.advance(len(batch))
        return np.stack(tiles) if tiles else np.zeros((0, *self.tile, 1), np.float32)

    def maps(self, tiles: np.ndarray) -> list[np.ndarray | None]:
        """Each sampled request's magnitude map inside the image (None: an empty projection)."""
        found: list[np.ndarray | None] = []
        for j in range(self.n_sample):
            rows, cols = valid_region(self.boxes[j], (self.pictures.size,) * 2, self.tile)
            values = magnitude(tiles[j][rows, cols])
            found.append(values if values.size and values.max() > 0 else None)
        return found

    def keep_top(self, tiles: np.ndarray, method: str, methods: Sequence[str],
                 result: CascadeResult) -> None:
        """Keep every live unit's rank-0 tile (float16 divided by its largest |value|)."""
        units, c = self.layer.channels, tiles.shape[-1]
        arrays = result.randomised.setdefault(self.layer.label, {
            "projections": np.zeros((len(methods), units, *self.tile, c), np.float16),
            "projection_scale": np.zeros((len(methods), units), np.float32),
            "image_id": np.full(units, -1, np.int64)})
        m = list(methods).index(method)
        for j, row in enumerate(self.rows.itertuples(index=False)):
            if int(row.rank) != 0 or int(row.unit) >= units:
                continue
            tile = np.nan_to_num(tiles[j], nan=0.0, posinf=0.0, neginf=0.0)
            peak = float(np.abs(tile).max()) if tile.size else 0.0
            arrays["image_id"][int(row.unit)] = int(row.image_id)
            if peak > 0:
                arrays["projections"][m, int(row.unit)] = tile / peak
                arrays["projection_scale"][m, int(row.unit)] = peak


def _compare(trained: np.ndarray | None, randomised: np.ndarray | None
             ) -> tuple[float, float] | None:
    """(Spearman, SSIM) of two magnitude maps; None when the trained one is empty, NaNs when
    the randomised one is."""
    if trained is None:
        return None
    if randomised is None:
        return (float("nan"), float("nan"))
    return spearman(trained, randomised), ssim(trained, randomised)


def _row(label: str, method: str, step: CascadeStep, full: bool,
         scores: list[tuple[float, float] | None], trained: list) -> dict:
    pairs = np.array([s for s in scores if s is not None], dtype=np.float64).reshape(-1, 2)
    kept = pairs[~np.isnan(pairs).any(axis=1)]
    empty = len(pairs) - len(kept)
    mean = kept.mean(axis=0) if len(kept) else np.full(2, np.nan)
    std = kept.std(axis=0) if len(kept) else np.full(2, np.nan)
    return {"layer": label, "method": method, "step": step.index,
            "randomised_from": step.down_to, "randomised_label": step.label, "full": full,
            "spearman_mean": float(mean[0]), "spearman_std": float(std[0]),
            "ssim_mean": float(mean[1]), "ssim_std": float(std[1]), "n": int(len(kept)),
            "empty": int(empty)}


def _input(pictures: Pictures, ids: Sequence[int], model: nn.Module) -> Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return pictures.normalise(torch.stack([pictures.pixels(i) for i in ids]).to(device))


@contextmanager
def positive_seeds(model: nn.Module, module: str, probe: Tensor) -> Iterator[None]:
    """While in the block, the output of ``module`` (its last call per forward pass, the one
    the projector seeds) reads 1 wherever it is not positive; its gradient is unchanged (the
    offset is a constant), so only the projector's seed changes (module doc). A module called
    more than once per pass is left as it is (its earlier outputs feed the network)."""
    target = model.get_submodule(module)
    counted = [0]
    handle = target.register_forward_hook(lambda *_: counted.__setitem__(0, counted[0] + 1))
    try:
        with evaluating(model):
            model(probe)
    finally:
        handle.remove()
    if counted[0] != 1:
        yield
        return

    def hook(_module: nn.Module, _args: tuple, output: object) -> object:
        if not isinstance(output, Tensor):
            return None
        # Unseen by the projector's rules (their torch-function mode): the offset is no
        # nonlinearity of the network, and its backward is the identity.
        with torch._C.DisableTorchFunction():
            value = output.detach()
            return output + (torch.where(value > 0, value, torch.ones_like(value)) - value)

    handle = target.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
