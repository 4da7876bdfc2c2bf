"""A mistaken workflow is refused before any stage runs: one line, exit status 2, and the run
folder of a finished run exactly as it was (every file's bytes, every stamp, the log and lock)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from support import TINY_DEMO_UNPINNED, pin_device, run_cli, save_random_checkpoint

from pipeline.cli import main
from pipeline.config import load_workflow
from pipeline.data.synthetic import CLASS_NAMES
from pipeline.stages import list_stages


def _snapshot(base: Path) -> dict[str, str]:
    """Every file and folder under ``base`` but the workflow files, with its content's hash."""
    found = {}
    for path in sorted(base.rglob("*")):
        name = path.relative_to(base).as_posix()
        if name.startswith("workflows"):
            continue
        found[name] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def finished(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of a folder in which `run all` of the reduced demo has finished."""
    base = tmp_path / "base"
    shutil.copytree(tiny_run, base, symlinks=True)
    return base


def _stages_on(base: Path) -> int:
    """How many stages the good workflow runs (the paper's experiments are on by default)."""
    workflow = load_workflow(base / "workflows" / "tiny.toml")
    return sum(stage.enabled(workflow) for stage in list_stages())


def _with(edits: dict[str, str], prepend: str = 'name = "tiny"\n') -> str:
    """The reduced demo with ``edits`` (old -> new text), devices pinned once they are made."""
    text = TINY_DEMO_UNPINNED
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return pin_device(prepend + text)


def _checkpoint_cases(base: Path) -> dict[str, tuple[str, str]]:
    text_file = base / "notes.pt"
    text_file.write_text("these are my notes, not weights\n", encoding="utf-8")
    other = save_random_checkpoint(base / "other.pt", num_classes=len(CLASS_NAMES) + 3)
    return {
        "checkpoint missing": (f'checkpoint = "{base / "missing.pt"}"\nimage_size = 64',
                               "missing.pt: model weights not found"),
        "checkpoint is a text file": (f'checkpoint = "{text_file}"\nimage_size = 64',
                                      "notes.pt: not a PyTorch weights file"),
        "checkpoint for another number of classes": (
            f'checkpoint = "{other}"\nimage_size = 64',
            f"weights do not fit model 'zfnet_small' with {len(CLASS_NAMES)} classes"),
    }


REFUSED = {
    "misspelled model": ({'name = "zfnet_small"': 'name = "zfnet_smal"'},
                         "did you mean 'zfnet_small'"),
    "image size below the model's minimum": (
        {"image_size = 64\nmean": "image_size = 8\nmean"}, "zfnet_small needs image_size >= 16"),
    "image size too small for a torchvision model": (
        {'name = "zfnet_small"\nimage_size = 64': 'name = "alexnet"\nimage_size = 40'},
        "cannot run on 40 x 40 inputs"),
    "zero std": ({"std = [0.25, 0.25, 0.25]": "std = [0, 0, 0]"}, "model.std"),
    "deconv batch size 0": ({"batch_size = 64\nmethods": "batch_size = 0\nmethods"},
                            "deconv.batch_size must be at least 1, got 0"),
    "deconv batch size negative": ({"batch_size = 64\nmethods": "batch_size = -4\nmethods"},
                                   "deconv.batch_size must be at least 1, got -4"),
    "negative num_workers": ({"chunk_size = 32": "chunk_size = 32\nnum_workers = -1"},
                             "activations.num_workers must be at least 0, got -1"),
    "unknown layer": ({"chunk_size = 32": 'chunk_size = 32\nmodules = ["features.relu9"]'},
                      "unknown or non-feature-map layer(s) 'features.relu9'"),
    "occlusion of an unknown layer": ({"[rank]": '[occlusion]\nlayer = "conv9"\n[rank]'},
                                      "[occlusion] layer 'conv9' is not an analysed layer"),
    "invariance of an unknown file": ({"[rank]": '[invariance]\nfiles = ["nope.png"]\n[rank]'},
                                      "[invariance] files: 'nope.png' is not in the manifest"),
    # a nonlinearity without a deconvnet rule on the way to an analysed layer (issue 14)
    "deconvnet through SiLU": ({'name = "zfnet_small"': 'name = "efficientnet_b0"'},
                               "crosses SiLU (in features.0.2), for which deconvnet has no rule; "
                               'set [deconv] methods = ["gradient"]'),
    "deconvnet through GELU": ({'name = "zfnet_small"': 'name = "convnext_tiny"',
                                "chunk_size = 32": 'chunk_size = 32\nmodules = ["features.0", '
                                                   '"features.1.1"]'},
                               "layer 'features.1.1': its backward path crosses GELU (in "
                               "features.1.0.block.4), for which deconvnet"),
    "deconvnet through Hardswish": ({'name = "zfnet_small"': 'name = "mobilenet_v3_small"'},
                                    "crosses Hardswish (in features.0.2), for which deconvnet"),
    "guided through SiLU": ({'name = "zfnet_small"': 'name = "efficientnet_b0"',
                             'methods = ["deconvnet", "guided", "gradient"]':
                                 'methods = ["gradient", "guided"]'},
                            "crosses SiLU (in features.0.2), for which guided has no rule"),
    "the occlusion's deconvnet through SiLU": (
        {'name = "zfnet_small"': 'name = "efficientnet_b0"',
         'methods = ["deconvnet", "guided", "gradient"]': 'methods = ["gradient"]'},
        "crosses SiLU (in features.0.2), for which deconvnet has no rule; its projection panel "
        "needs one: set [occlusion] images = 0"),
    "a snapshot after the last epoch": ({"snapshot_epochs = [1, 2]": "snapshot_epochs = [1, 3]"},
                                        "train.snapshot_epochs [3] are outside 1..2"),
}


def _refuse(base: Path, text: str, capsys, monkeypatch) -> str:
    """Run `run all` on ``text`` in ``base``; assert the refusal; return its line."""
    workflow = base / "workflows" / "mistake.toml"
    workflow.write_text(text, encoding="utf-8")
    before = _snapshot(base)
    monkeypatch.chdir(base)
    capsys.readouterr()
    status = main(["run", "all", "-w", "workflows/mistake.toml"])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), (out, err)
    assert _snapshot(base) == before
    return err


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_mistake_is_refused_before_any_stage(case, finished, capsys, monkeypatch):
    edits, expected = REFUSED[case]
    line = _refuse(finished, _with(edits), capsys, monkeypatch)
    assert expected in line


def test_bad_weights_files_are_refused_before_any_stage(finished, capsys, monkeypatch):
    for case, (model_lines, expected) in _checkpoint_cases(finished).items():
        text = _with({"image_size = 64\nmean": model_lines + "\nmean"})
        line = _refuse(finished, text, capsys, monkeypatch)
        assert expected in line, (case, line)


@pytest.mark.parametrize("name", [".", "..", "../escaped", "runs/inner", "a\\\\b"])
def test_run_name_must_be_a_plain_folder_name(name, finished, capsys, monkeypatch):
    line = _refuse(finished, _with({}, prepend=f'name = "{name}"\n'), capsys, monkeypatch)
    assert "must be a plain folder name" in line
    assert not (finished / "escaped").exists() and not (finished.parent / "escaped").exists()


@pytest.mark.slow
def test_status_refuses_what_run_would_refuse(finished):
    (finished / "workflows" / "mistake.toml").write_text(
        _with({'name = "zfnet_small"': 'name = "zfnet_smal"'}), encoding="utf-8")
    before = _snapshot(finished)
    result = run_cli("status", "-w", "workflows/mistake.toml", cwd=finished)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "did you mean 'zfnet_small'" in result.stderr
    assert _snapshot(finished) == before
    # ...and the good workflow is still done, stage by stage.
    good = run_cli("status", "-w", "workflows/tiny.toml", cwd=finished)
    assert good.returncode == 0 and good.stdout.count(" done ") == _stages_on(finished), \
        good.stdout


@pytest.mark.slow
def test_a_refused_typo_costs_no_finished_work(finished):
    """The issue's story: a typo, then the fix; nothing reruns."""
    (finished / "workflows" / "typo.toml").write_text(
        _with({'name = "zfnet_small"': 'name = "zfnet_smal"'}), encoding="utf-8")
    refused = run_cli("run", "all", "-w", "workflows/typo.toml", cwd=finished)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    fixed = run_cli("run", "all", "-w", "workflows/tiny.toml", cwd=finished)
    assert fixed.returncode == 0, fixed.stderr
    assert "running" not in fixed.stdout
    assert fixed.stdout.count("up to date") == _stages_on(finished)
