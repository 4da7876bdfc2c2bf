"""The activations stage keeps each unit's maps in its strongest images, and the deconv stage
takes them from there: the maps kept are the module's last call in the images rank would pick
(ties to the lower image id, unreadable images never), a pass that finds them all runs no
forward, and the maps it stores are those a pass of its own makes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from small_models import Reused, top_image_pass
from torch import nn

from pipeline.config import ActivationsConfig
from pipeline.inference.recorder import SummaryRecorder
from pipeline.inference.shard import ShareSource, _keeper
from pipeline.inference.top_maps import KeptMaps, TopMaps, kept_layers, merge_shares
from pipeline.interp.image_pass import ImagePass


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 255 - 0.5


def seen_maps(model: nn.Module, images: torch.Tensor, module: str) -> torch.Tensor:
    """The module's output as its forward hook sees it, at its last call (what the recorder
    summarises and the deconv stage's own pass stores: a later in-place module changes the
    tensor, not what was seen)."""
    seen = []
    handle = model.get_submodule(module).register_forward_hook(
        lambda _m, _a, output: seen.append(output.detach().clone()))
    with torch.inference_mode():
        model(images)
    handle.remove()
    return seen[-1]


def brute_force_top(peaks: np.ndarray, k: int) -> list[list[int]]:
    """Per unit, the ids of the k largest peaks (rows: images), ties to the lower id."""
    return [sorted(range(len(peaks)), key=lambda i: (-peaks[i, u], i))[:k]
            for u in range(peaks.shape[1])]


def test_offers_merge_to_the_k_strongest_ties_to_the_lower_id_never_the_unreadable():
    rng = np.random.default_rng(0)
    k, units, n = 3, 4, 11
    # a few values only, so that peaks tie often; image 6 is unreadable and strongest
    peaks = rng.integers(0, 4, (n, units)).astype(np.float32)
    peaks[6] = 10
    maps = torch.from_numpy(rng.normal(size=(n, units, 2, 3)).astype(np.float32))
    keeper = TopMaps({"m": "layer"}, k)
    for start in range(0, n, 4):  # batches of 4, 4, 3
        ids = list(range(start, min(start + 4, n)))
        keeper.begin(ids, ["truncated" if i == 6 else "" for i in ids], torch.device("cpu"))
        keeper.offer("m", maps[ids], torch.from_numpy(peaks[ids]))
    readable = peaks.copy()
    readable[6] = -np.inf
    expected = brute_force_top(readable, k)
    assert keeper.ids["layer"].tolist() == expected
    for unit, ids in enumerate(expected):
        assert torch.equal(keeper.maps["layer"][unit], maps[ids, unit])
    keeper.offer("other", maps[:2], torch.from_numpy(peaks[:2]))  # a layer not kept
    assert list(keeper.maps) == ["layer"]


def test_recorded_maps_are_the_modules_last_call_in_the_top_images(tmp_path):
    torch.manual_seed(0)
    model = Reused(inplace=True).eval()
    images = torch.rand(10, 3, 12, 12) - 0.5
    keeper = TopMaps({"conv1": "conv1", "act": "conv2"}, k=3)
    peaks: dict[str, list[torch.Tensor]] = {"conv1": [], "act": []}
    with SummaryRecorder(model, ["conv1", "act"], keeper) as recorder, torch.inference_mode():
        for start in range(0, 10, 4):
            ids = list(range(start, min(start + 4, 10)))
            keeper.begin(ids, [""] * len(ids), torch.device("cpu"))
            model(images[ids])
            for name in peaks:
                peaks[name].append(recorder.summaries[name].max)
    (tmp_path / "top_maps").mkdir()  # the staged artifact, as the stage makes it
    keeper.save(tmp_path / "top_maps" / "000000")
    merge_shares(tmp_path / "top_maps")
    kept = KeptMaps(tmp_path / "top_maps")
    for module, label in (("conv1", "conv1"), ("act", "conv2")):
        top = brute_force_top(torch.cat(peaks[module]).numpy(), 3)
        whole = seen_maps(model, images, module)
        units = np.repeat(np.arange(len(top)), 3)
        image_ids = np.asarray(top).reshape(-1)
        found, maps = kept.find(label, units, image_ids, tuple(whole.shape[2:]))
        assert found.all()
        for j, (unit, image) in enumerate(zip(units, image_ids, strict=True)):
            np.testing.assert_allclose(maps[j], whole[image, unit].numpy(), rtol=1e-5,
                                       atol=1e-6)
    # an image that is not among a unit's top ones is not found (and costs a forward pass)
    found, _ = kept.find("conv1", np.array([0]), np.array([99]), (12, 12))
    assert not found.any()


class SameShape(nn.Module):
    """``act`` runs twice per pass on maps of one shape: only its second call counts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x)))).mean((2, 3))


def test_a_module_called_twice_on_one_shape_keeps_its_second_call():
    torch.manual_seed(3)
    model = SameShape().eval()
    images = torch.rand(9, 3, 8, 8) - 0.5
    keeper = TopMaps({"act": "act"}, k=2)
    peaks = []
    with SummaryRecorder(model, ["act"], keeper) as recorder, torch.inference_mode():
        for start in range(0, 9, 3):
            ids = list(range(start, start + 3))
            keeper.begin(ids, [""] * 3, torch.device("cpu"))
            model(images[ids])
            peaks.append(recorder.summaries["act"].max)
    whole = seen_maps(model, images, "act")  # the second call's
    top = brute_force_top(torch.cat(peaks).numpy(), 2)
    assert keeper.ids["act"].tolist() == top
    for unit, ids in enumerate(top):
        torch.testing.assert_close(keeper.maps["act"][unit], whole[ids, unit])


def test_a_pass_with_every_map_kept_runs_no_forward_and_stores_the_same(tmp_path):
    model, decoded, layers, topk = top_image_pass(inplace=True)
    pixels = decoded.pixels
    reference = ImagePass.build(tmp_path / "own", model, layers, topk, 2, decoded, normalise,
                                batch_size=4)
    # what the activations stage would have kept: every image's maps, for every unit
    keeper = TopMaps({"conv1": "conv1", "act": "conv2"}, k=6)
    with SummaryRecorder(model, ["conv1", "act"], keeper), torch.inference_mode():
        keeper.begin(range(6), [""] * 6, torch.device("cpu"))
        model(normalise(torch.from_numpy(pixels)))
    (tmp_path / "top_maps").mkdir()  # the staged artifact, as the stage makes it
    keeper.save(tmp_path / "top_maps" / "000000")
    merge_shares(tmp_path / "top_maps")

    ran = []
    handle = model.conv1.register_forward_hook(lambda *_: ran.append(1))
    made = ImagePass.build(tmp_path / "kept", model, layers, topk, 2, decoded, normalise,
                           batch_size=4, kept=KeptMaps(tmp_path / "top_maps"))
    assert not ran and made.kept == len(topk) and made.passed == 0
    for layer in layers:
        np.testing.assert_allclose(made.maps(layer.label, 0, layer.channels),
                                   reference.maps(layer.label, 0, layer.channels),
                                   rtol=1e-5, atol=1e-6)
    assert np.array_equal(made.thumbs(made.ids), reference.thumbs(reference.ids))

    # a layer nobody kept: only the images with its maps pass through the model
    for suffix in ("values", "ids", "maps"):
        (tmp_path / "top_maps" / f"conv2.{suffix}.npy").unlink()
    partly = ImagePass.build(tmp_path / "partly", model, layers, topk, 2, decoded, normalise,
                             batch_size=4, kept=KeptMaps(tmp_path / "top_maps"))
    handle.remove()
    assert len(ran) == 1 and partly.kept == 4 and partly.passed == 3  # images 0, 3 and 5
    for layer in layers:
        np.testing.assert_allclose(partly.maps(layer.label, 0, layer.channels),
                                   reference.maps(layer.label, 0, layer.channels),
                                   rtol=1e-5, atol=1e-6)


def test_shares_merge_to_what_one_process_keeps_each_image_once(tmp_path):
    rng = np.random.default_rng(2)
    k, units, n = 4, 3, 12
    peaks = rng.integers(0, 5, (n, units)).astype(np.float32)  # ties across shares too
    maps = torch.from_numpy(rng.normal(size=(n, units, 3, 2)).astype(np.float32))

    def kept(ids: list[int]) -> TopMaps:
        keeper = TopMaps({"m": "a.1.relu"}, k)  # a dotted label
        for start in range(0, len(ids), 3):
            batch = ids[start:start + 3]
            keeper.begin(batch, [""] * len(batch), torch.device("cpu"))
            keeper.offer("m", maps[batch], torch.from_numpy(peaks[batch]))
        return keeper

    whole = kept(list(range(n)))
    folder = tmp_path / "top_maps"
    folder.mkdir()
    kept(list(range(0, 6))).save(folder / "000000")
    kept(list(range(6, n))).save(folder / "000002")
    kept(list(range(3, 6))).save(folder / "000001")  # a killed share's chunk, computed again
    (folder / ".000003.partial-1").mkdir()  # what a killed save left
    merge_shares(folder)
    merged = ["a.1.relu.ids.npy", "a.1.relu.maps.npy", "a.1.relu.values.npy"]
    assert sorted(p.name for p in folder.iterdir()) == merged
    assert np.array_equal(np.load(folder / "a.1.relu.ids.npy"), whole.ids["a.1.relu"].numpy())
    assert np.array_equal(np.load(folder / "a.1.relu.maps.npy"), whole.maps["a.1.relu"].numpy())
    # a merge killed after it wrote the top: merged again with a share left behind, the same
    kept(list(range(6, n))).save(folder / "000002")
    merge_shares(folder)
    assert sorted(p.name for p in folder.iterdir()) == merged
    assert np.array_equal(np.load(folder / "a.1.relu.ids.npy"), whole.ids["a.1.relu"].numpy())
    # a save after the staged folder was moved away (committed) makes nothing again
    kept([0]).save(tmp_path / "gone" / "000000")
    assert not (tmp_path / "gone").exists()
    kept([0]).save(folder / "000009", still_current=lambda: False)
    assert sorted(p.name for p in folder.iterdir()) == merged
    # a truncated file reads as nothing kept: the maps are computed again, not an error
    data = (folder / "a.1.relu.maps.npy").read_bytes()
    (folder / "a.1.relu.maps.npy").write_bytes(data[:len(data) // 2])
    found, _ = KeptMaps(folder).find("a.1.relu", np.array([0, 1]), np.array([0, 1]), (3, 2))
    assert not found.any()


def test_kept_from_the_deepest_layer_up_and_only_for_float32_passes():
    shapes = {"conv1": (64, 224, 224), "conv2": (128, 112, 112), "conv3": (256, 28, 28)}
    assert kept_layers(shapes, 9) == ["conv1", "conv2", "conv3"]
    assert kept_layers(shapes, 9, max_bytes=128 * 9 * 112 * 112 * 4 + 256 * 9 * 28 * 28 * 4) \
        == ["conv2", "conv3"]
    assert kept_layers(shapes, 9, max_bytes=1000) == []
    source = ShareSource(None, None, None, None, ActivationsConfig(), 9, Path("top_maps"))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _keeper(None, dataclasses.replace(source, keep_maps=0), cpu) is None
    assert _keeper(None, dataclasses.replace(source, top_maps=None), cpu) is None
    bf16 = dataclasses.replace(source.spec, bf16=True)
    assert _keeper(None, dataclasses.replace(source, spec=bf16), cpu) is None
    tf32 = dataclasses.replace(source.spec, tf32=True)
    assert _keeper(None, dataclasses.replace(source, spec=tf32), cuda) is None
