"""timm models by name: built without downloads, their published weights found in timm's own
cache (a Hugging Face hub cache the test fills), their preprocessing and class names taken from
the pretrained config, and their projections Captum's."""

import subprocess
import sys

import pytest
import timm
import torch
from captum_reference import compare_with_captum
from support import REPO, fill_hub_cache

from pipeline.errors import UserError
from pipeline.interp import analysable_layers
from pipeline.models import get_model
from pipeline.models.timm_models import TimmWeights


def test_a_timm_name_builds_the_architecture():
    model = get_model("timm/resnet18", num_classes=7)
    assert type(model).__module__.startswith("timm.") and model.fc.out_features == 7
    with pytest.raises(UserError, match="unknown timm model 'resnet5'; did you mean "
                                        "'timm/resnet50'"):
        get_model("timm/resnet5")


def test_without_timm_the_name_is_refused_with_how_to_install():
    code = ("import sys; sys.modules['timm'] = None\n"
            "from pipeline.models import get_model\n"
            "get_model('timm/resnet18')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert 'timm is not installed, and the model is a timm model; install it with `pip ' \
        'install -e ".[timm]"`' in result.stderr


def test_weights_come_from_timms_cache_with_their_preprocessing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    weights = TimmWeights("timm/resnet18", "DEFAULT", "w.toml")
    assert weights.tagged == "resnet18.a1_in1k"
    with pytest.raises(UserError, match="weights not in timm's cache and downloads are off"):
        weights.check(download=False)
    torch.manual_seed(0)
    saved = timm.create_model("resnet18").state_dict()
    fill_hub_cache(tmp_path / "hub", weights.cfg.hf_hub_id, saved)
    assert weights.check(download=False).name == "model.safetensors"
    loaded = weights.load(download=False)
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in saved.items())
    # timm's eval transform: 224 crop of the image resized to floor(224 / 0.95), bicubic
    assert weights.preset() == {"input_size": 224, "resize": 235, "mean": (0.485, 0.456, 0.406),
                                "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}
    assert len(weights.categories()) == 1000 and weights.categories()[207] == "golden retriever"
    assert TimmWeights("timm/resnet18", "tv_in1k", "w.toml").tagged == "resnet18.tv_in1k"
    with pytest.raises(UserError, match="'nope' is not a pretrained tag of timm/resnet18; "
                                        "choose one of DEFAULT, a1_in1k"):
        TimmWeights("timm/resnet18", "nope", "w.toml")


@pytest.mark.slow  # two rules at 17 layers
def test_resnet18_projections_are_captums():
    torch.manual_seed(0)
    model = get_model("timm/resnet18", num_classes=10).eval()
    layers = [layer.name for layer in analysable_layers(model, (64, 64))]
    assert len(layers) == 17  # Captum's rules apply at every one (timm's are nn.ReLU modules)
    assert compare_with_captum(model, layers, 64) <= 1e-5


def test_an_option_the_file_sets_wins_over_the_weights_and_keys_the_stages(write_workflow):
    from pipeline.config import load_workflow
    from pipeline.run_inputs import preprocessing
    from pipeline.stamps import config_values

    head = '[data]\nroot = "val"\n[model]\nname = "timm/resnet18"\nweights = "DEFAULT"\n'
    published = load_workflow(write_workflow(head, "published"))
    assert preprocessing(published).input_size == 224 and preprocessing(published).resize == 235
    smaller = load_workflow(write_workflow(head + "image_size = 64\n", "smaller"))
    prep = preprocessing(smaller)  # the weights' crop ratio and interpolation, at 64 px
    assert (prep.input_size, prep.resize, prep.interpolation) == (64, 67, "bicubic")
    # the default value, written out, is an option the file sets: it wins and is in the key
    said = load_workflow(write_workflow(head + "mean = [0.485, 0.456, 0.406]\n"
                                        "std = [0.5, 0.5, 0.5]\n", "said"))
    assert preprocessing(said).std == (0.5, 0.5, 0.5)
    assert config_values(said, ["model"]) != config_values(published, ["model"])
    grey = load_workflow(write_workflow(head + "mean = [0.5]\nstd = [0.25]\n", "grey"))
    with pytest.raises(UserError, match="mean and std have 1 values, and the model reads 3 "
                                        "channels"):
        preprocessing(grey)
    # without weights nothing is recorded, so runs made before 0.8.0 keep their keys
    plain = load_workflow(write_workflow('[model]\nname = "zfnet_small"\nimage_size = 64\n'
                                         '[data]\nsource = "synthetic"\n', "plain"))
    assert "overrides" not in config_values(plain, ["model"])["model"]
