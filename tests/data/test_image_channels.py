"""Images become the input of a model of 1, 3 or 4 channels: grey "L", RGB (as it always was)
or RGBA; more than 8 bits of grey is scaled, not clipped, and never passes through RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from pipeline.data.decoded import DecodedImages
from pipeline.data.images import ImageDataset, ToChannels, as_8bit, as_channels, as_rgb
from pipeline.errors import UserError
from pipeline.labelled import channel_names
from pipeline.models.preprocessing import Preprocessing

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (6, 8), dtype=np.uint8)
RAMP = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))  # 4 x 256


def _saved(tmp_path: Path, image: Image.Image, name: str, **options) -> Image.Image:
    """``image`` written to a file and opened again, as a data folder would give it."""
    path = tmp_path / name
    image.save(path, **options)
    return Image.open(path)


def test_a_grey_png_stays_grey_for_one_channel_and_is_repeated_for_three(tmp_path):
    grey = _saved(tmp_path, Image.fromarray(RGB[..., 0], "L"), "grey.png")
    one = as_channels(grey, 1)
    assert one.mode == "L" and np.array_equal(np.asarray(one), RGB[..., 0])
    three = np.asarray(as_channels(grey, 3))
    assert all(np.array_equal(three[..., c], RGB[..., 0]) for c in range(3))
    four = np.asarray(as_channels(grey, 4))
    assert np.array_equal(four[..., 0], RGB[..., 0]) and (four[..., 3] == 255).all()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_is_scaled_to_8_bit_grey_directly(tmp_path, suffix):
    image = _saved(tmp_path, Image.fromarray(RAMP), f"ramp{suffix}")
    assert image.mode.startswith("I;16")
    one = as_channels(image, 1)
    expected = np.rint(RAMP.astype(float) * 255 / 65535).astype(np.uint8)
    assert one.mode == "L" and np.array_equal(np.asarray(one), expected)  # a ramp, not white
    # the very values an RGB model gets in each of its channels
    assert np.array_equal(np.asarray(as_rgb(Image.open(tmp_path / f"ramp{suffix}")))[..., 1],
                          expected)
    assert as_8bit(Image.open(tmp_path / f"ramp{suffix}")).mode == "L"  # before any conversion


def test_rgb_becomes_pillows_luminance_for_one_channel(tmp_path):
    image = _saved(tmp_path, Image.fromarray(RGB), "rgb.png")
    got = as_channels(image, 1)
    r, g, b = (RGB[..., c].astype(np.int64) for c in range(3))
    # ITU-R 601-2 luma, as Pillow documents it: L = R * 299/1000 + G * 587/1000 + B * 114/1000
    assert np.abs(np.asarray(got, np.int64) - (r * 299 + g * 587 + b * 114) / 1000).max() <= 0.5
    assert np.array_equal(np.asarray(got), np.asarray(Image.fromarray(RGB).convert("L")))


def test_rgb_gets_an_opaque_alpha_and_rgba_keeps_its_own(tmp_path):
    rgb = _saved(tmp_path, Image.fromarray(RGB), "rgb.png")
    four = np.asarray(as_channels(rgb, 4))
    assert four.shape == (6, 8, 4) and np.array_equal(four[..., :3], RGB)
    assert (four[..., 3] == 255).all()
    rgba = _saved(tmp_path, Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"), "rgba.png")
    four = np.asarray(as_channels(rgba, 4))
    assert np.array_equal(four[..., :3], RGB) and np.array_equal(four[..., 3], ALPHA)
    # an RGB model drops alpha, as it always did (not composited)
    assert np.array_equal(np.asarray(as_channels(Image.open(tmp_path / "rgba.png"), 3)), RGB)


def test_a_transparent_palette_entry_becomes_alpha_zero(tmp_path):
    palette = Image.fromarray(RGB).quantize(colors=16)
    image = _saved(tmp_path, palette, "p.png", transparency=3)
    four = np.asarray(as_channels(image, 4))
    indices = np.asarray(palette)
    assert (four[indices == 3, 3] == 0).all() and (four[indices != 3, 3] == 255).all()


def test_cmyk_goes_through_rgb(tmp_path):
    image = _saved(tmp_path, Image.fromarray(RGB).convert("CMYK"), "cmyk.jpg", quality=100)
    rgb = Image.open(tmp_path / "cmyk.jpg").convert("RGB")
    four = np.asarray(as_channels(image, 4))
    assert np.array_equal(four[..., :3], np.asarray(rgb)) and (four[..., 3] == 255).all()
    one = np.asarray(as_channels(Image.open(tmp_path / "cmyk.jpg"), 1))
    assert np.array_equal(one, np.asarray(rgb.convert("L")))


def test_other_channel_counts_are_refused_with_what_to_do():
    with pytest.raises(UserError, match="2 input channels.*1 \\(grey\\), 3 \\(RGB\\) or 4"):
        ToChannels(2)
    with pytest.raises(UserError):
        Preprocessing(8, 8, (0.5, 0.5), (0.2, 0.2)).pixels()


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_the_models_transforms_give_its_channel_count(tmp_path, channels, mode):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA").save(tmp_path / "a" / "x.png")
    prep = Preprocessing(6, 6, (0.5,) * channels, (0.25,) * channels)
    images = ImageDataset(tmp_path, ["a/x.png"], [0], prep.pixels())
    pixels, label, index = images[0]
    assert pixels.dtype == torch.uint8 and pixels.shape == (channels, 6, 6)
    assert images.load(0, channels).mode == mode and images.load(0).mode == "RGB"
    normalised = prep.transform()(images.read(0))
    assert normalised.dtype == torch.float32 and normalised.shape == (channels, 6, 6)
    assert prep.training_transform(8)(images.read(0)).shape == (channels, 6, 6)
    assert len(channel_names(channels)) == channels


def test_three_channel_input_is_what_it_was(tmp_path):
    """Every mode gives an RGB model the very pixels of Pillow's RGB conversion, as before."""
    cases = {"L": Image.fromarray(RGB[..., 0], "L"), "P": Image.fromarray(RGB).quantize(16),
             "RGBA": Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"),
             "LA": Image.fromarray(np.dstack([RGB[..., 0], ALPHA]), "LA"),
             "1": Image.fromarray(RGB[..., 0] > 127), "RGB": Image.fromarray(RGB)}
    prep = Preprocessing(6, 6, (0.5,) * 3, (0.25,) * 3)
    for mode, image in cases.items():
        image.save(tmp_path / f"{mode}.png")
        images = ImageDataset(tmp_path, [f"{mode}.png"], [0], prep.pixels())
        before = v2.Compose(list(prep.pixels().transforms)[1:])(
            Image.open(tmp_path / f"{mode}.png").convert("RGB"))
        assert torch.equal(images[0][0], before), mode


def test_decoded_crops_keep_the_channel_count(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.fromarray(np.roll(RGB[..., 0], i, axis=1), "L").save(tmp_path / "a" / f"{i}.png")
    prep = Preprocessing(6, 6, (0.5,), (0.25,))
    images = ImageDataset(tmp_path, [f"a/{i}.png" for i in range(3)], [0] * 3, prep.pixels())
    decoded = DecodedImages.build(tmp_path / "decoded", np.array([2, 0]), images, 6, channels=1)
    crops = decoded.read(np.array([0, 2]))
    assert crops.shape == (2, 1, 6, 6)
    assert torch.equal(torch.from_numpy(crops[1]), images[2][0])
    again = DecodedImages.build(tmp_path / "decoded", np.array([0, 2]), images, 6, channels=1)
    assert again.reused
    # another channel count is another decoding, not a misread of these bytes
    assert not DecodedImages.build(tmp_path / "decoded", np.array([0, 2]), ImageDataset(
        tmp_path, [f"a/{i}.png" for i in range(3)], [0] * 3,
        Preprocessing(6, 6, (0.5,) * 3, (0.25,) * 3).pixels()), 6).reused
