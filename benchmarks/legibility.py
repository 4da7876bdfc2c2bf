"""How legible a run's projections are: the two figures of issue 10, per layer.

- ``hf``: the share of a projection's spectral power above half the Nyquist frequency (radial
  frequency > 0.25 cycles/pixel), of its luminance (0.299 R + 0.587 G + 0.114 B) with the mean
  removed, averaged over every stored projection of the layer. White noise gives about 0.80;
  natural image patches 0.05-0.15. The same figure is given for the first convolution's
  filters (``filters``), since every projection ends by filtering with them.
- ``grey``: the share of the *shipped* projection pixels (the left 3x3 grid of every unit's tile
  image ``reports/<name>/tiles/<layer>/NNNN.*``, first method) whose three channels are all
  within +-16 of mid-grey 128. Layer 1's tiles show the filter instead of projections.

Reads a finished run (``runs/<name>/projections.zarr``, ``model.pt`` or the workflow's
checkpoint, and the atlas's tiles); prints a table and, with ``--json``, writes the figures.

    python benchmarks/legibility.py -w workflows/demo.toml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GREY = 128
NEAR_GREY = 16
LUMA = np.array([0.299, 0.587, 0.114])


def high_frequency_share(images: np.ndarray) -> float:
    """Mean over ``[n, h, w, 3]`` (or ``[n, h, w]``) images of the power share above half
    Nyquist, of the luminance with its mean removed (images with no power are skipped)."""
    images = np.asarray(images, dtype=np.float64)
    luma = images @ LUMA if images.ndim == 4 else images
    luma = luma - luma.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(luma)) ** 2
    fy = np.fft.fftfreq(luma.shape[1])[:, None]
    fx = np.fft.fftfreq(luma.shape[2])[None, :]
    high = np.sqrt(fy**2 + fx**2) > 0.25
    total = power.sum(axis=(1, 2))
    keep = total > 0
    if not keep.any():
        return float("nan")
    return float((power[keep][:, high].sum(axis=1) / total[keep]).mean())


def near_grey_share(cells: list[np.ndarray]) -> float:
    """Share of pixels of uint8 RGB cells whose channels are all within +-16 of 128."""
    pixels = np.concatenate([c.reshape(-1, 3) for c in cells]).astype(np.int16)
    return float((np.abs(pixels - GREY).max(axis=1) <= NEAR_GREY).mean())


def projection_cells(tile: np.ndarray, grid: int = 3, gutter: int = 2, gap: int = 10
                     ) -> list[np.ndarray]:
    """The projection cells (left grid) of a Figure 2 tile image."""
    height, width = tile.shape[:2]
    grid_w = (width - gap) // 2
    cw = (grid_w - (grid - 1) * gutter) // grid
    ch = (height - (grid - 1) * gutter) // grid
    cells = []
    for r in range(grid):
        for c in range(grid):
            y, x = r * (ch + gutter), c * (cw + gutter)
            cells.append(tile[y:y + ch, x:x + cw])
    return cells


def stored_projections(group) -> np.ndarray:
    """Every stored projection of a layer, ``[n, h, w, 3]`` float, zero = no contribution.

    New stores keep float projections (``projections``: [method, unit, rank, h, w, 3], or
    [unit, rank, h, w, 3]); old ones kept uint8 display images with zero at 128."""
    values = np.asarray(group["projections"][:])
    if values.dtype == np.uint8:
        values = values.astype(np.float64) - GREY
    if values.ndim == 6:
        values = values[0]
    flat = values.reshape(-1, *values.shape[-3:]).astype(np.float64)
    return flat[np.abs(flat).reshape(len(flat), -1).max(axis=1) > 0]


def first_filters(model) -> np.ndarray | None:
    from pipeline.models.evaluation import first_conv

    first = first_conv(model)
    if first is None:
        return None
    return first[1].weight.detach().cpu().numpy().transpose(0, 2, 3, 1)


def measure(workflow_path: Path, base: Path) -> dict:
    import torch
    import zarr
    from PIL import Image

    from pipeline import catalog
    from pipeline.config import load_workflow
    from pipeline.layout import RunLayout
    from pipeline.run_inputs import analysed_model

    workflow = load_workflow(workflow_path)
    layout = RunLayout(base, workflow.name)
    store = zarr.open_group(layout.projections, mode="r")
    result: dict = {"layers": {}}
    classes = catalog.CLASSES.read(catalog.CLASSES.path(layout))
    filters = first_filters(analysed_model(workflow, layout, classes, torch.device("cpu")))
    if filters is not None:
        result["filters"] = high_frequency_share(filters)
    order = zarr.open_group(layout.activations, mode="r").attrs["layers"]
    for label in [name for name in order if name in store]:
        figures = {"hf": high_frequency_share(stored_projections(store[label]))}
        # unit tiles only (0012.jpg), not the further methods' grids (0012-guided.jpg)
        tiles = sorted(path for path in (layout.report_dir / "tiles" / label).glob("*.*")
                       if path.stem.isdigit())
        cells = [cell for path in tiles
                 for cell in projection_cells(np.asarray(Image.open(path).convert("RGB")))]
        if cells:
            figures["grey"] = near_grey_share(cells)
        result["layers"][label] = figures
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workflow", default="workflows/demo.toml", type=Path)
    parser.add_argument("--base", default=Path("."), type=Path,
                        help="folder holding runs/ and reports/ (default: here)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    result = measure(args.workflow, args.base)
    if "filters" in result:
        print(f"first-layer filters: high-frequency share {result['filters']:.2f}")
    print(f"{'layer':<10}{'hf':>8}{'grey':>8}")
    for label, figures in result["layers"].items():
        grey = figures.get("grey", float("nan"))
        print(f"{label:<10}{figures['hf']:>8.2f}{grey:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
