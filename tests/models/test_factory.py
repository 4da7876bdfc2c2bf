"""The user's own model file: ``[model] factory`` builds it with its arguments, every failure is
one line naming the file, the function and the error, and its content keys the stages."""

import os

import pytest
import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.factory import build_from_factory, factory_digest

MODEL_FILE = '''
from torch import nn


def build(num_classes, width=4):
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))


def fixed():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())


def broken(num_classes):
    raise ValueError("width must be even")


def not_a_model(num_classes):
    return 42
'''


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_models.py").write_text(MODEL_FILE)
    return tmp_path / "my_models.py"


def test_builds_with_its_arguments_and_the_class_count(model_file):
    model = build_from_factory("my_models.py:build", {"width": 6}, num_classes=5)
    assert model[0].out_channels == 6 and model[-1].out_features == 5
    # a function without num_classes is not given it; the workflow's own value wins
    assert isinstance(build_from_factory("my_models.py:fixed", {}, num_classes=5), nn.Module)
    assert build_from_factory("my_models.py:build", {"num_classes": 3}, 5)[-1].out_features == 3


def test_an_importable_module_works_too():
    model = build_from_factory("torchvision.models:resnet18", {}, num_classes=7)
    assert model.fc.out_features == 7


@pytest.mark.parametrize("factory, args, expected", [
    ("missing.py:build", {}, r"missing.py: model file not found \(from \[model\] factory"),
    ("my_models.py:nothing", {}, r"my_models.py: has no function 'nothing' .*functions "
                                 r"defined there: broken, build, fixed, not_a_model"),
    ("my_models.py:broken", {}, r"my_models.py: broken\(num_classes=4\) raised ValueError: "
                                r"width must be even"),
    ("my_models.py:build", {"depth": 3}, r"build\(depth=3, num_classes=4\) raised TypeError"),
    ("my_models.py:not_a_model", {}, r"not_a_model\(\) returned a int, not a torch.nn.Module"),
    ("no_such_package.models:build", {}, r"cannot import module 'no_such_package.models'"),
    ("my_models.py", {}, r"expected 'file.py:function' or 'package.module:function'"),
])
def test_each_failure_is_one_line(model_file, factory, args, expected):
    with pytest.raises(UserError, match=expected) as refused:
        build_from_factory(factory, args, num_classes=4)
    assert "\n" not in str(refused.value)


def test_a_model_file_without_the_py_suffix_is_refused_in_one_line(model_file):
    """A path with a folder is a file, whatever its suffix; Python imports only .py files."""
    (model_file.parent / "sub").mkdir()
    (model_file.parent / "sub" / "net.txt").write_text(MODEL_FILE)
    with pytest.raises(UserError, match=r"net.txt: not a Python file \(from \[model\] factory "
                                        r"'sub/net.txt:build'\); name a .py file") as refused:
        build_from_factory("sub/net.txt:build", {}, num_classes=4)
    assert "\n" not in str(refused.value)


def test_a_file_that_does_not_import_names_itself(model_file):
    model_file.write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(UserError, match=r"my_models.py: cannot import the model file "
                                        r"\(RuntimeError: no GPU here\)"):
        build_from_factory("my_models.py:build", {}, num_classes=4)


def test_digest_follows_the_content_not_the_time(model_file):
    before = factory_digest("my_models.py:build")
    os.utime(model_file, (1, 1))
    assert factory_digest("my_models.py:build") == before
    model_file.write_text(MODEL_FILE + "\n# wider\n")
    assert factory_digest("my_models.py:build") != before
    assert factory_digest("missing.py:build") is None


def test_builds_on_the_meta_device_for_checking(model_file):
    with torch.device("meta"):
        model = build_from_factory("my_models.py:build", {}, num_classes=4)
    assert next(model.parameters()).is_meta


def test_an_edited_file_is_imported_anew(model_file):
    assert build_from_factory("my_models.py:build", {}, num_classes=4)[0].out_channels == 4
    model_file.write_text(MODEL_FILE.replace("width=4", "width=5"))
    assert build_from_factory("my_models.py:build", {}, num_classes=4)[0].out_channels == 5


def test_the_input_channels_are_those_of_the_first_convolution_run():
    from pipeline.models.evaluation import input_channels

    class StemLast(nn.Module):  # the head is registered before the stem
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(16, 4, 1)
            self.stem = nn.Conv2d(1, 16, 3)

        def forward(self, x):
            return self.head(self.stem(x))

    assert input_channels(StemLast(), (8, 8)) == 1
    with torch.device("meta"):
        assert input_channels(StemLast(), (8, 8)) == 1
    assert input_channels(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), (8, 8)) == 3
