"""Every option's value is checked before any stage runs, whether or not a stage about to run
uses it: a finished run does not hide a mistake until a later change makes its stage run. The
refusal is one line, exit status 2, and the run folder is exactly as it was (every file's and
folder's name, size, modification time and bytes). What only this machine can say (is CUDA
here?) is asked only of a stage about to run on it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from support import TINY_DEMO_UNPINNED, device_sections, pin_device, run_cli

from pipeline.cli import main
from pipeline.config import load_workflow
from pipeline.stages import list_stages

#: The sections with a ``device`` option (train, activations, deconv, occlusion, ...).
DEVICE_SECTIONS = sorted(device_sections())

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def _listing(base: Path) -> dict[str, tuple]:
    """Every file and folder under ``base`` but the workflow files: (size, modification time
    in ns, content hash)."""
    found = {}
    for path in sorted(base.rglob("*")):
        name = path.relative_to(base).as_posix()
        if name.startswith("workflows"):
            continue
        info = path.lstat()
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        found[name] = (info.st_size, info.st_mtime_ns, digest)
    return found


def _workflow(base: Path, options: dict[str, str], name: str = "mistake") -> str:
    """Write ``workflows/<name>.toml``: the reduced demo (its run folder ``runs/tiny``) with
    ``options`` ("section" -> TOML lines) added to their sections, the devices they leave
    unset pinned to the CPU; return its path."""
    text = 'name = "tiny"\n' + TINY_DEMO_UNPINNED
    for section, lines in options.items():
        header = f"[{section}]\n"
        text = (text.replace(header, header + lines + "\n") if header in text
                else f"{text}{header}{lines}\n")
    path = base / "workflows" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pin_device(text), encoding="utf-8")
    return f"workflows/{name}.toml"


def _refused(base: Path, args: list[str], capsys, monkeypatch) -> str:
    """Run ``args`` in process in ``base``; assert a one-line refusal that leaves the folder as
    it was; return the line."""
    before = _listing(base)
    monkeypatch.chdir(base)
    capsys.readouterr()
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), (out, err)
    assert _listing(base) == before
    return err


@pytest.fixture
def finished(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of a folder in which `run all` of the reduced demo has finished."""
    base = tmp_path / "base"
    shutil.copytree(tiny_run, base, symlinks=True)
    return base


# -- a fresh folder: nothing computed yet, checked in process -------------------------------

@pytest.mark.parametrize("section", DEVICE_SECTIONS)
def test_every_device_option_is_spelled_as_a_device(section, tmp_path, capsys, monkeypatch):
    workflow = _workflow(tmp_path, {section: 'device = "banana"'})
    line = _refused(tmp_path, ["status", "-w", workflow], capsys, monkeypatch)
    assert line.startswith(f"error: {workflow}: [{section}] device 'banana' is not a torch "
                           "device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"), line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("value", "expected"), [
    ("cuda:x", "'cuda:x' is not a torch device"),
    ("CPU", "'CPU' is not a torch device"),
    ("", "'' is not a torch device"),
    ("meta", "'meta' holds shapes, not data"),
])
def test_device_values_that_are_no_device(value, expected, tmp_path, capsys, monkeypatch):
    workflow = _workflow(tmp_path, {"activations": f'device = "{value}"'})
    line = _refused(tmp_path, ["run", "all", "-w", workflow], capsys, monkeypatch)
    assert f"[activations] device {expected}" in line, line


def test_excluded_classes_are_classes_before_prepare_runs(tmp_path, capsys, monkeypatch):
    """The synthetic demo's classes are known before prepare generates a single image."""
    workflow = _workflow(tmp_path, {"invariance": 'exclude_rotation = ["stripes"]'})
    line = _refused(tmp_path, ["status", "-w", workflow], capsys, monkeypatch)
    assert "[invariance] exclude_rotation: 'stripes' is not a class of the data" in line, line


# -- a finished run ---------------------------------------------------------------------------

def test_a_finished_run_refuses_a_misspelled_device(finished):
    """The issue's story: `device = "banana"` on a run with nothing to do, through the CLI."""
    workflow = _workflow(finished, {"activations": 'device = "banana"'})
    before = _listing(finished)
    for command in (["run", "all"], ["status"]):
        result = run_cli(*command, "-w", workflow, cwd=finished)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert f"{workflow}: [activations] device 'banana'" in result.stderr, result.stderr
        assert _listing(finished) == before, command


def test_a_finished_run_refuses_any_misspelled_device(finished, capsys, monkeypatch):
    for section in DEVICE_SECTIONS:  # one copy of the run: each refusal leaves it as it was
        workflow = _workflow(finished, {section: 'device = "banana"'})
        line = _refused(finished, ["run", "all", "-w", workflow], capsys, monkeypatch)
        assert f"[{section}] device 'banana' is not a torch device" in line, line


@no_cuda
def test_a_device_this_machine_lacks_is_no_reason_to_refuse_finished_work(finished, capsys,
                                                                          monkeypatch):
    """`cuda:0` everywhere, on a machine without CUDA: nothing runs on it, nothing is refused."""
    workflow = _workflow(finished, {section: 'device = "cuda:0"'
                                    for section in DEVICE_SECTIONS})
    stages = sum(stage.enabled(load_workflow(finished / workflow)) for stage in list_stages())
    monkeypatch.chdir(finished)
    capsys.readouterr()
    assert main(["status", "-w", workflow]) == 0
    assert capsys.readouterr().out.count(" done ") == stages
    bookkeeping = {"runs/tiny/pipeline.log", "runs/tiny/.lock"}  # a run, even of nothing
    outputs = {name: entry for name, entry in _listing(finished).items()
               if name not in bookkeeping}
    assert main(["run", "all", "-w", workflow]) == 0
    out, err = capsys.readouterr()
    assert out.count("up to date") == stages and "running" not in out, (out, err)
    assert {name: entry for name, entry in _listing(finished).items()
            if name not in bookkeeping} == outputs


@no_cuda
def test_a_device_this_machine_lacks_is_refused_before_its_stage_runs(finished, capsys,
                                                                       monkeypatch):
    workflow = _workflow(finished, {"deconv": 'device = "cuda"'})
    line = _refused(finished, ["run", "deconv", "-w", workflow], capsys, monkeypatch)
    assert f"{workflow}: [deconv] device 'cuda' asked for, but CUDA is not available" in line


OPTIONS_OF_STAGES_NOT_PLANNED = {
    "occlusion layer": ({"occlusion": 'layer = "conv9"'},
                        "[occlusion] layer 'conv9' is not an analysed layer; use one of conv1"),
    "occlusion files": ({"occlusion": 'files = ["nope.png"]'},
                        "[occlusion] files: 'nope.png' is not in the manifest"),
    "invariance files": ({"invariance": 'files = ["nope.png"]'},
                         "[invariance] files: 'nope.png' is not in the manifest"),
    "invariance classes": ({"invariance": 'exclude_scale = ["red disc"]'},
                           "[invariance] exclude_scale: 'red disc' is not a class of the data; "
                           "did you mean 'red_disc'?"),
}


def test_options_of_stages_not_about_to_run_are_checked(finished, capsys, monkeypatch):
    """`run rank` plans rank alone; the experiments' options are checked all the same."""
    for case, (options, expected) in OPTIONS_OF_STAGES_NOT_PLANNED.items():
        workflow = _workflow(finished, options)
        line = _refused(finished, ["run", "rank", "-w", workflow], capsys, monkeypatch)
        assert expected in line, (case, line)
