"""Every image mode a data folder can hold decodes to the 8-bit RGB the network sees: more than 8
bits per channel is scaled, not clipped (a 16-bit ramp stays a ramp), and greyscale, palette,
alpha and CMYK images keep their documented conversion."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import ImageDataset, scan_image_folder

RAMP = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))  # 4 x 256


def _decoded(path: Path) -> np.ndarray:
    dataset = ImageDataset(path.parent, [path.name], [0], transform=lambda image: image)
    image = dataset.load(0)
    assert image.mode == "RGB"
    return np.asarray(image)


def _png_rgb16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_grey_ramp_stays_a_ramp(tmp_path, suffix):
    path = tmp_path / f"ramp{suffix}"
    Image.fromarray(RAMP).save(path)
    assert Image.open(path).mode.startswith("I;16")
    got = _decoded(path)[0]
    expected = np.rint(RAMP[0].astype(float) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(got[:, 0], expected)  # 0, 1, 2, ... 255: a ramp, not white
    assert np.all(np.diff(got[:, 0].astype(int)) >= 0) and got[:, 0].min() == 0
    assert (got[:, 0] == 255).sum() == 1
    assert np.array_equal(got[..., 0], got[..., 2])  # grey: three equal channels


def test_a_16_bit_rgb_png_is_scaled_per_channel(tmp_path):
    pixels = np.stack([RAMP, RAMP[:, ::-1], np.full_like(RAMP, 30000)], axis=-1)
    got = _decoded(_png_rgb16(tmp_path / "rgb16.png", pixels))[0]
    # the high byte of each 16-bit value: within one step of v * 255 / 65535
    assert np.abs(got.astype(int) - pixels[0].astype(float) * 255 / 65535).max() <= 1
    assert got[:, 0].min() == 0 and got[:, 0].max() == 255


def test_32_bit_and_float_images_use_their_range(tmp_path):
    ints = Image.fromarray((RAMP.astype(np.int64) * 30000).astype(np.int32), "I")
    path = tmp_path / "ints.tif"
    ints.save(path)
    got = _decoded(path)[0, :, 0]
    assert got[0] == 0 and got[-1] == np.rint(65535 * 30000 * 255 / (2**31 - 1))
    assert np.all(np.diff(got.astype(int)) >= 0)
    floats = Image.fromarray((RAMP / 65535).astype(np.float32), "F")
    path = tmp_path / "floats.tif"
    floats.save(path)
    got = _decoded(path)[0, :, 0]
    assert got[0] == 0 and got[-1] == 255 and got[128] == 128


def test_8_bit_modes_keep_their_conversion(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cases = {
        "L": Image.fromarray(rgb[..., 0], "L"),
        "P": Image.fromarray(rgb).quantize(colors=16),
        "RGBA": Image.fromarray(np.dstack([rgb, np.full((6, 8), 7, np.uint8)]), "RGBA"),
        "LA": Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "P with transparency": Image.fromarray(rgb).quantize(colors=16),
        "1": Image.fromarray(rgb[..., 0] > 127),
        "RGB": Image.fromarray(rgb),
    }
    for mode, image in cases.items():
        path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        options = {"quality": 100} if mode == "CMYK" else \
            {"transparency": 3} if "transparency" in mode else {}
        image.save(path, **options)
        expected = np.asarray(Image.open(path).convert("RGB"))
        got = _decoded(path)
        assert np.array_equal(got, expected), mode
    # alpha is dropped, not composited: the colour stays what it was
    assert np.array_equal(_decoded(tmp_path / "RGBA.png"), rgb)
    assert np.array_equal(_decoded(tmp_path / "L.png")[..., 1], rgb[..., 0])


def test_tiff_files_in_a_data_folder_are_listed(tmp_path):
    (tmp_path / "ramps").mkdir()
    for name in ("a.tif", "b.TIFF"):
        Image.fromarray(RAMP).save(tmp_path / "ramps" / name, format="TIFF")
    frame, _ = scan_image_folder(tmp_path)
    assert sorted(frame["path"]) == ["ramps/a.tif", "ramps/b.TIFF"]
