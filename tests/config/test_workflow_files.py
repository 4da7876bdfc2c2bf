"""Every workflow file shipped in workflows/ loads, and the ZFNet one asks for the paper."""

from pathlib import Path

import pytest

from pipeline.config import load_workflow

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.toml"))


def test_the_shipped_workflows_are_found():
    assert {"demo.toml", "zfnet-imagenet.toml"} <= {path.name for path in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_shipped_workflow_loads(path):
    assert load_workflow(path).name == path.stem


def test_the_zfnet_workflow_is_the_papers_training():
    workflow = load_workflow(REPO / "workflows" / "zfnet-imagenet.toml")
    data, model, train = workflow.data, workflow.model, workflow.train
    assert (data.source, bool(data.train_root)) == ("imagenet", True)
    assert (model.name, model.image_size, model.resize_size) == ("zfnet", 224, 256)
    assert model.std == pytest.approx((1 / 255,) * 3)  # pixel values 0..255, as in the paper
    assert (train.enabled, train.recipe, train.epochs) == (True, "zf2013", 70)
    assert (train.optimizer, train.lr, train.momentum, train.batch_size, train.schedule,
            train.init_std, train.augment, train.filter_radius) == (
        "sgd", 0.01, 0.9, 128, "plateau", 0.01, True, 0.1)
    assert train.snapshot_epochs == (1, 2, 5, 10, 20, 30, 40, 64)
