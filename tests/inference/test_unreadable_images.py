"""Unreadable files are skipped and listed; every readable one, whatever its mode, is analysed."""

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image
from support import folder_workflow, run_cli, save_random_checkpoint, write_images

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess


def test_bad_files_are_skipped_and_listed_and_the_rest_analysed(tmp_path, write_workflow):
    data = tmp_path / "data"
    write_images(data, ["cats", "dogs"], per_class=3)
    good = Image.fromarray(np.full((40, 40, 3), 120, np.uint8))
    good.save(data / "cats" / "full.JPEG", format="JPEG")
    truncated = (data / "cats" / "full.JPEG").read_bytes()
    (data / "cats" / "truncated.JPEG").write_bytes(truncated[: len(truncated) // 2])
    (data / "dogs" / "empty.JPEG").write_bytes(b"")
    (data / "dogs" / "notes.JPEG").write_text("this is not an image\n")
    good.save(data / "dogs" / "png_inside.JPEG", format="PNG")
    good.convert("CMYK").save(data / "dogs" / "cmyk.JPEG", format="JPEG")
    good.convert("L").save(data / "cats" / "grey.JPEG", format="JPEG")

    checkpoint = save_random_checkpoint(tmp_path / "model.pt", num_classes=2)
    path = write_workflow(folder_workflow(data, checkpoint))
    result = run_cli("run", "activations", "-w", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    run = tmp_path / "runs" / "tiny"
    skipped = pd.read_parquet(run / "skipped.parquet")
    assert sorted(skipped["path"]) == ["cats/truncated.JPEG", "dogs/empty.JPEG", "dogs/notes.JPEG"]
    assert skipped["reason"].str.len().gt(0).all() and "\n" not in "".join(skipped["reason"])
    assert not any(str(tmp_path) in reason for reason in skipped["reason"])

    manifest = pd.read_parquet(run / "manifest.parquet")
    store = zarr.open_group(run / "activations.zarr", mode="r")
    maxes = np.asarray(store["conv1/max"][:])
    bad = manifest["path"].isin(skipped["path"]).to_numpy()
    assert np.isnan(maxes[bad]).all()
    assert np.isfinite(maxes[~bad]).all() and (np.asarray(store["pred"][:])[~bad] >= 0).all()
    assert store.attrs["n_readable"] == int((~bad).sum()) == 10

    ranked = run_cli("run", "rank", "-w", str(path), cwd=tmp_path)
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    topk = pd.read_parquet(run / "topk.parquet")
    assert not set(topk["image_id"]) & set(manifest.loc[bad, "image_id"])
