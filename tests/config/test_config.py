"""The workflow loader: typed values, and one clear line for each kind of mistake."""

import re
from pathlib import Path

import pytest

from pipeline.config import Workflow, describe, load_workflow
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[model]
name = "zfnet_small"
[data]
source = "synthetic"
"""


def test_demo_workflow_loads_with_its_values():
    workflow = load_workflow(REPO / "workflows" / "demo.toml")
    assert workflow.name == "demo"
    assert workflow.data.source == "synthetic"
    assert workflow.train.enabled is True
    assert workflow.rank.top_k == 9
    assert workflow.model.mean == (0.5, 0.5, 0.5)


def test_defaults_fill_missing_sections(write_workflow):
    workflow = load_workflow(write_workflow(MINIMAL))
    assert workflow.deconv.methods == ("deconvnet",)
    assert workflow.activations.modules == ()
    assert isinstance(workflow, Workflow)


def test_misspelled_key_names_file_key_and_nearest(write_workflow):
    path = write_workflow(MINIMAL + "[rank]\ntop_kk = 9\n")
    with pytest.raises(ConfigError) as error:
        load_workflow(path)
    message = str(error.value)
    assert str(path) in message and "rank.top_kk" in message and "rank.top_k" in message
    assert "\n" not in message


def test_misspelled_section_suggests_the_section(write_workflow):
    with pytest.raises(ConfigError, match="did you mean 'deconv'"):
        load_workflow(write_workflow(MINIMAL + "[deconvv]\nmethod = 'guided'\n"))


def test_wrong_type_names_key_expected_and_got(write_workflow):
    with pytest.raises(ConfigError) as error:
        load_workflow(write_workflow(MINIMAL + "[rank]\ntop_k = 'nine'\n"))
    assert "rank.top_k: expected int, got str 'nine'" in str(error.value)


def test_bool_is_not_an_int(write_workflow):
    with pytest.raises(ConfigError, match="rank.top_k: expected int"):
        load_workflow(write_workflow(MINIMAL + "[rank]\ntop_k = true\n"))


def test_choice_outside_the_allowed_values(write_workflow):
    with pytest.raises(ConfigError, match=r"deconv.methods: expected each of \['deconvnet'"):
        load_workflow(write_workflow(MINIMAL + "[deconv]\nmethods = ['guided', 'lrp']\n"))


def test_projection_methods_are_a_non_empty_list_without_repeats(write_workflow):
    workflow = load_workflow(write_workflow(
        MINIMAL + "[deconv]\nmethods = ['deconvnet', 'guided', 'gradient']\n"))
    assert workflow.deconv.methods == ("deconvnet", "guided", "gradient")
    with pytest.raises(ConfigError, match="deconv.methods is empty"):
        load_workflow(write_workflow(MINIMAL + "[deconv]\nmethods = []\n"))
    with pytest.raises(ConfigError, match="lists a method twice"):
        load_workflow(write_workflow(MINIMAL + "[deconv]\nmethods = ['guided', 'guided']\n"))
    # the old single-method key points to the new one
    with pytest.raises(ConfigError, match="did you mean 'deconv.methods'"):
        load_workflow(write_workflow(MINIMAL + "[deconv]\nmethod = 'guided'\n"))


def test_model_needs_a_name_or_a_factory(write_workflow):
    with pytest.raises(ConfigError, match=r"\[model\] needs exactly one of name .* got neither"):
        load_workflow(write_workflow("[model]\nimage_size = 64\n"))
    with pytest.raises(ConfigError, match=r"\[model\] needs exactly one of name .* got both"):
        load_workflow(write_workflow("[model]\nname = 'vgg16'\nfactory = 'm.py:build'\n"))
    with pytest.raises(ConfigError, match=r"factory 'my_models.py': expected 'file.py:function'"):
        load_workflow(write_workflow("[model]\nfactory = 'my_models.py'\n"))
    with pytest.raises(ConfigError, match=r"checkpoint_key names an entry of \[model\] "
                                          r"checkpoint, which is not set"):
        load_workflow(write_workflow("[model]\nname = 'vgg16'\ncheckpoint_key = 'ema'\n"))


def test_imagefolder_needs_a_root_and_data_flag_supplies_it(write_workflow):
    path = write_workflow("[model]\nname = 'zfnet_small'\n")
    with pytest.raises(ConfigError, match=r"\[data\] root is required"):
        load_workflow(path)
    assert load_workflow(path, data_root="/somewhere/val").data.root == "/somewhere/val"


def test_negative_filter_radius_is_refused(write_workflow):
    path = write_workflow(MINIMAL + "[train]\nfilter_radius = -0.1\n")
    with pytest.raises(ConfigError, match="filter_radius"):
        load_workflow(path)


def test_every_option_is_documented():
    rows = describe()
    assert {"model.name", "data.synthetic.seed", "deconv.methods"} <= {row[0] for row in rows}
    assert all(row[3] for row in rows)


def test_the_readme_table_lists_every_option():
    from support import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [key for key, _, _, _ in describe() if f"| `{key}` |" not in readme]
    assert not missing, f"README's workflow table lacks {missing}"


def test_the_config_offers_exactly_the_projectors_methods():
    from pipeline.config_checks import PROJECTION_METHODS
    from pipeline.interp.projector import METHODS

    assert PROJECTION_METHODS == METHODS


@pytest.mark.parametrize(("table", "expected"), [
    ("[activations]\nnum_workers = -1\n", "activations.num_workers must be at least 0"),
    ("[activations]\nprefetch = 0\n", "activations.prefetch must be at least 1"),
    ("[deconv]\nbatch_size = 0\n", "deconv.batch_size must be at least 1"),
    ("[featurevis]\nbatch_size = 0\n", "featurevis.batch_size must be at least 1"),
    ("[featurevis]\nsteps = 0\n", "featurevis.steps must be at least 1"),
    ("[featurevis]\nunits = -1\n", "featurevis.units must be at least 0"),
    ("[featurevis]\nlr = 0.0\n", "featurevis.lr must be above 0"),
    ("[train]\nepochs = 0\n", "train.epochs must be at least 1"),
    ("[train]\nlr = 0.0\n", "lr > 0"),
    ("[train]\nmomentum = 1.0\n", "momentum"),
    ("[model]\nname = 'zfnet_small'\nstd = [0.2, 0.0, 0.2]\n", "model.std needs values > 0"),
    ("[model]\nname = 'zfnet_small'\nimage_size = 224\nresize_size = 200\n",
     "resize_size (200) is smaller than model.image_size (224)"),
])
def test_meaningless_values_are_refused(write_workflow, table, expected):
    text = MINIMAL.replace('[model]\nname = "zfnet_small"\n', "") if "[model]" in table \
        else MINIMAL
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_workflow(write_workflow(text + table))


@pytest.mark.parametrize("name", [".", "..", "../out", "a/b"])
def test_the_run_name_is_a_plain_folder_name(write_workflow, name):
    with pytest.raises(ConfigError, match="must be a plain folder name"):
        load_workflow(write_workflow(f'name = "{name}"\n' + MINIMAL))


def test_an_empty_name_is_the_file_stem(write_workflow):
    assert load_workflow(write_workflow('name = ""\n' + MINIMAL, name="mine")).name == "mine"


def test_the_zf2013_recipe_fills_only_what_the_file_leaves_unset(write_workflow):
    workflow = load_workflow(write_workflow(MINIMAL + '[train]\nenabled = true\nrecipe = '
                                            '"zf2013"\nlr = 0.05\n'))
    train = workflow.train
    assert train.lr == 0.05  # set in the file: the file wins
    assert (train.optimizer, train.momentum, train.batch_size, train.schedule) == (
        "sgd", 0.9, 128, "plateau")
    assert (train.init_std, train.augment, train.filter_radius) == (0.01, True, 0.1)
    custom = load_workflow(write_workflow(MINIMAL + "[train]\nenabled = true\n")).train
    assert (custom.optimizer, custom.schedule, custom.init_std) == ("adamw", "cosine", 0.0)


@pytest.mark.parametrize(("table", "expected"), [
    ("[train]\nenabled = true\nepochs = 4\nsnapshot_epochs = [1, 5]\n",
     "train.snapshot_epochs [5] are outside 1..4"),
    ("[train]\nenabled = true\nepochs = 4\nsnapshot_epochs = [2, 1]\n", "increasing"),
    ("[train]\nsnapshot_epochs = [1]\n", "needs [train] enabled = true"),
    ("[occlusion]\nstride = -1\n", "occlusion.stride must be at least 0"),
    ("[occlusion]\nsize = 500\n", "occlusion.size (500) is larger than the input"),
    ("[invariance]\nbatch_size = 0\n", "invariance.batch_size must be at least 1"),
])
def test_experiment_options_out_of_range_are_refused(write_workflow, table, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_workflow(write_workflow(MINIMAL + table))


def test_an_option_added_later_is_left_out_of_keys_at_its_default(write_workflow):
    """Adding ``[train] recipe`` (0.4.0) must not make a 0.4.0-era train stamp stale, but
    setting it must."""
    from pipeline.stamps import config_values

    plain = load_workflow(write_workflow(MINIMAL + "[train]\nenabled = true\n"))
    assert "recipe" not in config_values(plain, ["train"])["train"]
    assert "epochs" in config_values(plain, ["train"])["train"]
    recipe = load_workflow(write_workflow(MINIMAL + '[train]\nenabled = true\nrecipe = "zf2013"'))
    assert config_values(recipe, ["train"])["train"]["recipe"] == "zf2013"


def test_a_renamed_option_loads_under_its_old_name_with_one_note_and_the_same_key(
        write_workflow, capsys):
    """``[activations] layers`` is ``modules`` now (the dotted module names; a *layer* is
    what the atlas labels conv1, conv2, ...): the old spelling still works, says so in one
    line, and the stamps hash it under its old name, so finished runs stay done."""
    from pipeline.stamps import config_values

    new = load_workflow(write_workflow(MINIMAL + '[activations]\nmodules = ["features.relu1"]\n',
                                       "new"))
    assert capsys.readouterr().err == ""
    old = load_workflow(write_workflow(MINIMAL + '[activations]\nlayers = ["features.relu1"]\n',
                                       "old"))
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "'activations.layers' is now called 'activations.modules'" in \
        note[0]
    assert old.activations.modules == new.activations.modules == ("features.relu1",)
    for keys in (["activations"], ["activations.modules"]):
        assert config_values(old, keys) == config_values(new, keys)
    assert config_values(new, ["activations"])["activations"]["layers"] == ("features.relu1",)
    assert config_values(new, ["activations.modules"]) == {
        "activations.layers": ("features.relu1",)}
    both = MINIMAL + '[activations]\nmodules = ["a"]\nlayers = ["b"]\n'
    with pytest.raises(ConfigError, match="are the same option"):
        load_workflow(write_workflow(both, "both"))
