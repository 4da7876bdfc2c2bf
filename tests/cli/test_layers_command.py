"""`pipeline layers` prints each analysable layer with its shape and receptive field."""

import pytest
from support import REPO, run_cli

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess


def _rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()[2:]]


def test_alexnet_layers_have_torchvision_receptive_fields(tmp_path):
    result = run_cli("layers", "--model", "alexnet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert [row[0] for row in rows] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [row[1] for row in rows] == ["features.1", "features.4", "features.7", "features.9",
                                        "features.11"]
    assert [int(row[7]) for row in rows] == [11, 51, 99, 131, 163]


def test_demo_workflow_layers(tmp_path):
    result = run_cli("layers", "-w", str(REPO / "workflows" / "demo.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert [row[1] for row in rows] == [f"features.relu{i}" for i in range(1, 6)]
    assert [int(row[7]) for row in rows] == [7, 27, 51, 67, 83]


def test_unknown_model_is_one_line_with_a_suggestion(tmp_path):
    result = run_cli("layers", "--model", "alexnt", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "did you mean 'alexnet'" in result.stderr


def test_demo_model_by_name_matches_its_workflow(tmp_path):
    """The README's `layers --model zfnet_small` builds the demo's model at the size it is made
    for (its builder's default, 64 px) and prints the same five layers as the demo workflow."""
    by_name = run_cli("layers", "--model", "zfnet_small", cwd=tmp_path)
    by_workflow = run_cli("layers", "-w", str(REPO / "workflows" / "demo.toml"), cwd=tmp_path)
    assert by_name.returncode == 0, by_name.stderr
    assert len(_rows(by_name.stdout)) == 5
    assert _rows(by_name.stdout) == _rows(by_workflow.stdout)
    assert by_name.stdout.startswith("zfnet_small at 64 x 64 px: 5 layers")


def test_image_size_too_small_for_the_model_is_one_line(tmp_path):
    for args in (("--model", "alexnet", "--image-size", "32"),
                 ("--model", "zfnet_small", "--image-size", "8")):
        result = run_cli("layers", *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("error: model '")


def test_googlenet_lists_its_functional_relu_blocks(tmp_path):
    """GoogLeNet's BasicConv2d returns F.relu(...): each block is a rectified output that the
    deconvnet applies to, not the raw convolution inside it."""
    result = run_cli("layers", "--model", "googlenet", "--image-size", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("googlenet at 64 x 64 px: 57 layers")
    assert result.stdout.splitlines()[1].endswith("deconvnet/guided")
    rows = _rows(result.stdout)
    assert [row[1] for row in rows[:4]] == ["conv1", "conv2", "conv3", "inception3a.branch1"]
    assert [row[0] for row in rows] == [f"conv{i}" for i in range(1, 58)]
    assert {row[-1] for row in rows} == {"yes"}
