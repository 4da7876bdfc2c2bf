"""User errors reach the terminal as one line and exit status 2, never a traceback."""

import fcntl

import pytest
from support import pin_device, run_cli

from pipeline.layout import RunLayout


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.slow
def test_misspelled_key_exits_2(tmp_path, write_workflow):
    path = write_workflow("[model]\nname = 'zfnet_small'\nimage_sise = 64\n"
                          "[data]\nsource='synthetic'\n")
    result = run_cli("run", "all", "-w", str(path), cwd=tmp_path)
    _assert_one_line_error(result, str(path), "model.image_sise", "model.image_size")


@pytest.mark.slow
def test_wrong_type_exits_2(tmp_path, write_workflow):
    path = write_workflow("[model]\nname = 'zfnet_small'\n[data]\nsource='synthetic'\n"
                          "[train]\nepochs = 'ten'\n")
    result = run_cli("status", "-w", str(path), cwd=tmp_path)
    _assert_one_line_error(result, str(path), "train.epochs", "expected int")


@pytest.mark.slow
def test_missing_data_directory_exits_2_and_names_it(tmp_path, write_workflow):
    missing = tmp_path / "no" / "such" / "val"
    path = write_workflow(pin_device(f"[model]\nname = 'zfnet_small'\ncheckpoint = 'x.pt'\n"
                                     f"[data]\nroot = '{missing}'\n"))
    result = run_cli("run", "all", "-w", str(path), cwd=tmp_path)
    _assert_one_line_error(result, str(missing), "data folder not found")


@pytest.mark.slow
def test_missing_workflow_file_exits_2(tmp_path):
    result = run_cli("run", "all", "-w", "nope.toml", cwd=tmp_path)
    _assert_one_line_error(result, "nope.toml", "not found")


@pytest.mark.slow
def test_unknown_stage_is_refused_by_the_parser(tmp_path):
    result = run_cli("run", "rnak", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.slow
def test_second_run_on_a_running_workflow_refuses(tmp_path, write_workflow):
    path = write_workflow(pin_device("[model]\nname = 'zfnet_small'\n[data]\nsource='synthetic'\n"
                                     "[train]\nenabled = true\n"))
    layout = RunLayout(tmp_path, "tiny")
    layout.run_dir.mkdir(parents=True)
    with open(layout.lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli("run", "all", "-w", str(path), cwd=tmp_path)
    _assert_one_line_error(result, "already running")


@pytest.mark.slow
def test_help_lists_the_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "run" in result.stdout and "status" in result.stdout


def test_an_error_after_an_unfinished_progress_bar_starts_on_its_own_line(capsys):
    """A stage stopped mid-loop leaves its bar open; the CLI ends it before the error line."""
    from pipeline.progress import finish_open_bars, progress

    bar = progress(range(5), "deconv", total=5)
    next(bar)
    capsys.readouterr()
    finish_open_bars()
    assert capsys.readouterr().err.endswith("\n")


def test_the_command_line_offers_exactly_the_registered_stages():
    """``run STAGE`` lists the stages without importing them (the CLI starts before torch)."""
    from pipeline.cli import STAGE_NAMES
    from pipeline.stages import list_stages

    assert STAGE_NAMES == tuple(stage.name for stage in list_stages())
