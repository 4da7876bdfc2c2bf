"""Figure 4's search and projection: each checkpoint's per-unit maxima are exactly what that
checkpoint, loaded on its own, computes; ties go to the lowest image id and the first position;
each stored projection is the engine's output at that maximum. The images are real files,
decoded once into the store's scratch folder as the stage does (DecodedImages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from support import pin_device, write_images
from torch import nn

from pipeline.config import load_workflow
from pipeline.data.decoded import DecodedImages
from pipeline.data.images import ImageDataset
from pipeline.errors import UserError
from pipeline.experiments.evolution_run import (
    DECODED,
    EvolutionLayer,
    image_batches,
    searched_images,
    strongest_activations,
    write_evolution,
)
from pipeline.experiments.snapshots import file_labels, load_snapshot
from pipeline.interp import Projector, analysable_layers, field_tile, receptive_fields
from pipeline.layout import RunLayout
from pipeline.models import get_model
from pipeline.run_inputs import preprocessing
from pipeline.run_inputs import snapshots as snapshot_files

SIZE = 32
CLASSES = 4
IDS = np.array([2, 3, 5, 7, 11, 13, 17])  # image ids as in a manifest with gaps (unreadable)


def _decode(root: Path, files: list[Path], prep):
    """What the stage's ``decode`` does: the manifest's ``files`` (18, of which IDS are
    searched) decoded once (in this process) into the scratch folder it is given."""
    names = [path.relative_to(root).as_posix() for path in files]
    pixels = ImageDataset(root, names, [0] * len(names), prep.pixels())

    def decode(folder: Path) -> DecodedImages:
        return DecodedImages.build(folder, IDS, pixels, SIZE, num_workers=0)

    return decode


def _images(decoded: DecodedImages, prep) -> dict[int, torch.Tensor]:
    """The network inputs of the searched images, by image id."""
    normalise = prep.normalise()
    return {int(i): normalise(torch.from_numpy(decoded.read(np.array([i]))))[0] for i in IDS}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Three differently initialised zfnet_small weight sets saved as files, and a workflow
    that lists them in ``[evolution] checkpoints``."""
    base = tmp_path_factory.mktemp("evolution")
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = get_model("zfnet_small", num_classes=CLASSES, image_size=SIZE)
        paths.append(base / f"seed{seed}" / "weights.pt")
        paths[-1].parent.mkdir()
        torch.save(model.state_dict(), paths[-1])
    listed = ", ".join(f'"{path}"' for path in paths)
    workflow = base / "workflows" / "evolve.toml"
    workflow.parent.mkdir()
    workflow.write_text(pin_device(f'[data]\nsource = "synthetic"\n[model]\n'
                                   f'name = "zfnet_small"\nimage_size = {SIZE}\n'
                                   f"[evolution]\ncheckpoints = [{listed}]\n"), encoding="utf-8")
    return workflow, paths


def _direct_maxima(path: Path, images: dict[int, torch.Tensor], module: str):
    """The oracle: the checkpoint loaded on its own into a fresh model, every image's whole map
    recorded with a plain forward hook, the first maximum over (image, y, x) in numpy."""
    model = get_model("zfnet_small", num_classes=CLASSES, image_size=SIZE)
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    maps = []
    handle = model.get_submodule(module).register_forward_hook(
        lambda _m, _i, output: maps.append(output.detach().clone()))
    try:
        with torch.no_grad():
            for image_id in sorted(images):
                model(images[image_id][None])
    finally:
        handle.remove()
    stacked = torch.cat(maps).numpy()  # [N, C, H, W], images in id order
    n, c, h, w = stacked.shape
    flat = stacked.transpose(1, 0, 2, 3).reshape(c, n * h * w)
    where = flat.argmax(axis=1)  # numpy: the first occurrence
    image, rest = np.divmod(where, h * w)
    y, x = np.divmod(rest, w)
    return flat.max(axis=1), np.array(sorted(images))[image], y, x


@pytest.fixture(scope="module")
def store(checkpoints, tmp_path_factory) -> tuple[zarr.Group, dict, list[EvolutionLayer]]:
    workflow_path, _ = checkpoints
    workflow = load_workflow(workflow_path)
    layout = RunLayout(workflow_path.parents[1], workflow.name)
    prep = preprocessing(workflow)
    files = tmp_path_factory.mktemp("images")
    decode = _decode(files, write_images(files, ["a", "b"], per_class=9, size=40, fmt="PNG",
                                         seed=5), prep)
    images = _images(decode(tmp_path_factory.mktemp("oracle")), prep)
    model = get_model("zfnet_small", num_classes=CLASSES, image_size=SIZE)
    layers = [EvolutionLayer(info.label, info.name, info.channels, info.out_shape[2])
              for info in analysable_layers(model, (SIZE, SIZE))]
    snapshots = [(s.label, lambda s=s: load_snapshot(workflow.model, workflow.source, s, CLASSES,
                                                     torch.device("cpu")))
                 for s in snapshot_files(workflow, layout)]
    path = tmp_path_factory.mktemp("store") / "evolution.zarr"
    write_evolution(path, snapshots, layers, decode, prep.normalise(), IDS, SIZE,
                    batch_size=3, device=torch.device("cpu"))
    assert not (path / DECODED).exists()  # the scratch folder goes once the store is written
    return zarr.open_group(path, mode="r"), images, layers


def test_per_checkpoint_maxima_equal_each_checkpoint_loaded_on_its_own(store, checkpoints):
    group, images, layers = store
    _, paths = checkpoints
    # the files share a name: the labels tell them apart by their place, never by a folder
    assert group.attrs["snapshots"] == ["1. weights.pt", "2. weights.pt", "3. weights.pt"]
    assert group.attrs["n_images"] == len(IDS) and group.attrs["image_size"] == SIZE
    assert [layer.label for layer in layers] == group.attrs["layers"] == [
        "conv1", "conv2", "conv3", "conv4", "conv5"]
    live_units = 0
    for layer in layers:
        stored = group[layer.label]
        for s, path in enumerate(paths):
            value, image_id, y, x = _direct_maxima(path, images, layer.module)
            np.testing.assert_allclose(stored["value"][s], value, rtol=1e-5, atol=1e-6)
            live = value > 0
            live_units += int(live.sum())
            np.testing.assert_array_equal(stored["image_id"][s][live], image_id[live])
            np.testing.assert_array_equal(stored["y"][s][live], y[live])
            np.testing.assert_array_equal(stored["x"][s][live], x[live])
            assert (stored["image_id"][s][~live] == -1).all()
            assert (stored["projection_scale"][s][~live] == 0).all()
        # differently initialised checkpoints find different maxima
        assert not np.array_equal(stored["value"][0], stored["value"][1])
    assert live_units > 300


def test_stored_projection_is_the_deconvnet_at_the_maximum(store, checkpoints):
    group, images, layers = store
    workflow_path, paths = checkpoints
    prep = preprocessing(load_workflow(workflow_path))
    model = get_model("zfnet_small", num_classes=CLASSES, image_size=SIZE)
    model.load_state_dict(torch.load(paths[2], weights_only=True))
    model.eval()
    fields = receptive_fields(model, (SIZE, SIZE))
    projector = Projector(model, method="deconvnet")
    for layer in (layers[1], layers[3]):
        stored = group[layer.label]
        field, tile = fields[layer.module], tuple(stored.attrs["tile"])
        assert tile == field.tile_hw((SIZE, SIZE))
        unit = int(np.argmax(stored["value"][2]))
        image_id, y, x = (int(stored[name][2, unit]) for name in ("image_id", "y", "x"))
        exact = projector.project(images[image_id][None], layer.module, torch.tensor([unit]),
                                  torch.tensor([[y, x]]))[0].permute(1, 2, 0).numpy()
        expected = field_tile(exact, field.box(y, x), tile, 0.0)
        scale = stored["projection_scale"][2, unit]
        peak = np.abs(expected).max()
        assert peak > 0 and np.isclose(scale, peak, rtol=1e-5)
        np.testing.assert_allclose(stored["projections"][2, unit].astype(np.float32) * scale,
                                   expected, atol=peak * 1e-3)
        pixels = (images[image_id] * torch.tensor(prep.std).view(3, 1, 1)
                  + torch.tensor(prep.mean).view(3, 1, 1)).clamp(0, 1)
        pixels = (pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(stored["patches"][2, unit],
                                      field_tile(pixels, field.box(y, x), tile, 128))


def test_ties_go_to_the_lowest_image_then_the_first_position():
    """A 1x1 convolution with hand-set weights: channel 0 is 1 everywhere (every image and
    position tie), channel 1 is 0 everywhere (silent), channel 2 is the input's red channel,
    whose largest value 230 appears twice in image 6 and once in image 9."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[2, 0] = 1.0
        conv.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    model = nn.Sequential(conv, nn.ReLU()).eval()
    crops = {i: np.zeros((3, 4, 4), np.uint8) for i in (4, 6, 9)}  # crops of 8-bit images
    crops[4][0, 2, 3] = 128
    crops[6][0, 1, 1] = crops[6][0, 2, 2] = 230
    crops[9][0, 0, 3] = 230  # ties with image 6 across a batch boundary (batches of 2)
    layers = [EvolutionLayer("relu", "1", 3, 4)]
    batches = image_batches(lambda ids: np.stack([crops[int(i)] for i in ids]),
                            lambda x: x.float() / 255, np.array([4, 6, 9]), 2,
                            torch.device("cpu"))
    found = strongest_activations(model, batches, layers)
    maxima = found["relu"]
    np.testing.assert_allclose(maxima.value, [1.0, 0.0, 230 / 255], rtol=1e-6)
    assert maxima.image_id.tolist() == [4, -1, 6]
    assert maxima.y.tolist() == [0, -1, 1] and maxima.x.tolist() == [0, -1, 1]


def test_searched_images_are_readable_and_evenly_spaced():
    readable = np.ones(12, bool)
    readable[[1, 5]] = False
    assert searched_images(readable, 0).tolist() == [0, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert searched_images(readable, 50).tolist() == [0, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert searched_images(readable, 3).tolist() == [2, 7, 10]


def test_file_labels_are_names_unless_two_files_share_one():
    assert file_labels([Path("/a/e1.pt"), Path("/b/e2.pt")]) == ["e1.pt", "e2.pt"]
    assert file_labels([Path("/home/alice/m.pt"), Path("/home/bob/m.pt")]) == [
        "1. m.pt", "2. m.pt"]  # no folder (here a user's name) reaches the shared atlas


def test_a_checkpoint_for_another_model_is_refused_naming_its_setting(checkpoints, tmp_path):
    workflow_path, _ = checkpoints
    workflow = load_workflow(workflow_path)
    (snapshot, *_) = snapshot_files(workflow, RunLayout(tmp_path, workflow.name))
    with pytest.raises(UserError) as refused:
        load_snapshot(workflow.model, workflow.source, snapshot, CLASSES + 1,
                      torch.device("cpu"))
    assert "(from [evolution] checkpoints)" in str(refused.value)
    assert "weights.pt" in str(refused.value) and "\n" not in str(refused.value)


def test_an_image_unreadable_now_is_left_out_and_said(checkpoints, tmp_path, capsys):
    """The activations stage read it; it is gone since: searched without it, not as zeros."""
    workflow_path, _ = checkpoints
    workflow = load_workflow(workflow_path)
    prep = preprocessing(workflow)
    files = write_images(tmp_path / "images", ["a", "b"], per_class=9, size=40, fmt="PNG")
    files[int(IDS[2])].write_bytes(b"not an image any more")
    model = get_model("zfnet_small", num_classes=CLASSES, image_size=SIZE)
    layers = [EvolutionLayer(info.label, info.name, info.channels, info.out_shape[2])
              for info in analysable_layers(model, (SIZE, SIZE))][:1]
    (first, *_) = snapshot_files(workflow, RunLayout(workflow_path.parents[1], workflow.name))
    snapshots = [(first.label, lambda: load_snapshot(workflow.model, workflow.source, first,
                                                     CLASSES, torch.device("cpu")))]
    path = tmp_path / "evolution.zarr"
    searched = write_evolution(path, snapshots, layers, _decode(tmp_path / "images", files, prep),
                               prep.normalise(), IDS, SIZE, batch_size=4,
                               device=torch.device("cpu"))
    assert searched == len(IDS) - 1
    assert "1 of 7 searched images cannot be read now" in capsys.readouterr().out
    group = zarr.open_group(path, mode="r")
    assert group.attrs["n_images"] == len(IDS) - 1
    assert int(IDS[2]) not in set(group["conv1"]["image_id"][0].tolist())
