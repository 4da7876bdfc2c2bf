"""The tests' own guard of issue 26 ("tests mean the same everywhere"): every workflow a test
writes pins each section's device (support.pin_device), and what runs the pipeline for a test
refuses one that leaves a device at "auto", which is CUDA on a machine with a GPU."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest
from support import (
    ON_DEVICE_ENV,
    TINY_DEMO,
    TINY_DEMO_UNPINNED,
    check_cli_devices,
    device_sections,
    folder_workflow,
    pin_device,
    pin_workflow,
    tiny_demo,
)

from pipeline.config import ModelConfig, Workflow, load_workflow
from pipeline.layout import RunLayout
from pipeline.runner import Runner
from pipeline.stages import list_stages
from pipeline.stamps import config_values

#: Sub-tables, comments, a header with spaces, devices set on purpose ("auto" said in words).
MIXED = """
name = "mixed"
[data]
source = "synthetic"
[data.synthetic]
image_size = 64
[model]
name = "zfnet_small"
image_size = 64
[train]   # a comment after the header
enabled = true
device = "cuda:0"
[ activations ]
device = 'auto'
modules = ["features.relu1"]
[deconv]
methods = ["gradient"]
[sanity]
device = "banana"
seed = 2"""  # no newline at the end


def _load(tmp_path: Path, text: str, name: str = "w") -> Workflow:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return load_workflow(path)


def _devices(workflow: Workflow) -> dict[str, str]:
    return {name: workflow.section(name).device for name in device_sections()}


def test_the_device_sections_are_read_from_the_config():
    hints = typing.get_type_hints(Workflow)
    assert set(device_sections()) == {
        name for name, hint in hints.items() if dataclasses.is_dataclass(hint)
        and "device" in {option.name for option in dataclasses.fields(hint)}}
    assert {"train", "activations", "deconv", "featurevis", "occlusion", "evolution",
            "invariance", "sanity"} <= set(device_sections())
    assert "data" not in device_sections() and "rank" not in device_sections()


def test_the_tiny_demo_is_pinned_to_the_cpu_and_computes_what_it_did(tmp_path):
    assert TINY_DEMO == pin_device(TINY_DEMO_UNPINNED) == pin_device(TINY_DEMO)  # idempotent
    pinned, unpinned = _load(tmp_path, TINY_DEMO, "pinned"), _load(tmp_path, TINY_DEMO_UNPINNED)
    assert _devices(pinned) == dict.fromkeys(device_sections(), "cpu")
    assert set(_devices(unpinned).values()) == {"auto"}
    # devices are execution options: no stage's key, no stage's being on, changes
    for stage in list_stages():
        assert config_values(pinned, stage.config) == config_values(unpinned, stage.config), \
            stage.name
        assert stage.enabled(pinned) == stage.enabled(unpinned), stage.name
    # and everything else is as it was
    assert dataclasses.replace(pin_workflow(unpinned), source="", name="") == \
        dataclasses.replace(pinned, source="", name="")


def test_sub_tables_comments_and_devices_set_on_purpose(tmp_path):
    text = pin_device(MIXED)
    assert text.count("[data]") == 1 and text.count("[train]") == 1  # no table twice
    assert tomllib.loads(text)["data"] == {"source": "synthetic", "synthetic": {"image_size": 64}}
    workflow = _load(tmp_path, text)
    assert _devices(workflow) == {**dict.fromkeys(device_sections(), "cpu"),
                                  "train": "cuda:0", "sanity": "banana"}
    assert workflow.sanity.seed == 2 and workflow.activations.modules == ("features.relu1",)
    assert workflow.train.enabled and workflow.deconv.methods == ("gradient",)
    on_cuda = _load(tmp_path, pin_device(MIXED, "cuda"), "cuda")
    assert _devices(on_cuda) == {**dict.fromkeys(device_sections(), "cuda"),
                                 "train": "cuda:0", "sanity": "banana"}


def test_the_helpers_that_add_to_the_demo_pin_the_whole_text(tmp_path):
    workflow = _load(tmp_path, tiny_demo("units = 2\n[sanity]\nseed = 1\n"))
    assert workflow.featurevis.units == 2 and workflow.sanity.seed == 1
    assert set(_devices(workflow).values()) == {"cpu"}
    folder = folder_workflow(tmp_path, tmp_path / "m.pt", extra="[occlusion]\nimages = 0\n")
    assert set(_devices(_load(tmp_path, folder, "folder")).values()) == {"cpu"}
    with pytest.raises(tomllib.TOMLDecodeError):  # why: pin the whole, not a part
        tomllib.loads(TINY_DEMO + "[sanity]\nseed = 1\n")


@pytest.mark.parametrize("text", [
    'train.enabled = true\n[model]\nname = "zfnet_small"\n',  # a dotted key
    'train = { enabled = true }\n[model]\nname = "zfnet_small"\n',  # an inline table
    '[model]\nname = "zfnet_small"\n[train]\nenabled = true\n[deconv]\ndevice = "auto"  \n'
    'device2 = """\n[deconv]\n"""\n',  # a header line inside a multi-line string
])
def test_a_section_it_cannot_pin_by_its_header_is_refused(text):
    with pytest.raises(ValueError, match="set its device in the text itself"):
        pin_device(text)


def test_the_cli_check_refuses_a_workflow_that_leaves_a_device_to_the_machine(tmp_path):
    (tmp_path / "auto.toml").write_text(TINY_DEMO_UNPINNED, encoding="utf-8")
    (tmp_path / "part.toml").write_text(TINY_DEMO.replace('device = "cpu"\nsteps', 'steps'),
                                        encoding="utf-8")
    (tmp_path / "cpu.toml").write_text(TINY_DEMO, encoding="utf-8")
    for args in (["run", "all", "-w", "auto.toml"], ["status", "--workflow=auto.toml"],
                 ["run", "deconv", "--workf", str(tmp_path / "auto.toml")],  # an abbreviation
                 ["compare", "-w", "cpu.toml", "-w", "auto.toml"]):
        with pytest.raises(AssertionError, match=r'auto\.toml leaves device = "auto" in '
                                                 r"\[train\], \[activations\], .*pin_device"):
            check_cli_devices(args, tmp_path)
    with pytest.raises(AssertionError, match=r'part\.toml leaves device = "auto" in '
                                             r"\[featurevis\]: on a machine with a GPU"):
        check_cli_devices(["run", "all", "-w", "part.toml"], tmp_path)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "demo.toml").write_text(TINY_DEMO_UNPINNED, encoding="utf-8")
    with pytest.raises(AssertionError, match=r"workflows/demo\.toml leaves"):  # the default
        check_cli_devices(["run"], tmp_path)


def test_the_cli_check_leaves_alone_what_the_cli_refuses_or_never_computes_with(tmp_path,
                                                                                  monkeypatch):
    (tmp_path / "auto.toml").write_text(TINY_DEMO_UNPINNED, encoding="utf-8")
    (tmp_path / "cpu.toml").write_text(TINY_DEMO, encoding="utf-8")
    (tmp_path / "bad.toml").write_text(TINY_DEMO_UNPINNED.replace("top_k =", "top_kk ="))
    for args in (["run", "all", "-w", "cpu.toml"], ["compare", "-w", "cpu.toml", "-w", "cpu.toml"],
                 ["run", "all", "-w", "missing.toml"],  # the CLI's own "not found"
                 ["run", "all", "-w", "bad.toml"],  # the loader's own refusal
                 ["run", "rnak", "-w", "auto.toml"],  # a usage error
                 ["layers", "-w", "auto.toml"],  # builds its model on meta and the CPU
                 ["--help"]):
        check_cli_devices(args, tmp_path)
    monkeypatch.setenv(ON_DEVICE_ENV, "1")  # a test marked `device`
    check_cli_devices(["run", "all", "-w", "auto.toml"], tmp_path)


def test_runner_run_in_this_process_refuses_a_workflow_left_to_the_machine(tmp_path):
    built = Workflow(name="w", model=ModelConfig(name="zfnet_small"))
    with pytest.raises(AssertionError, match=r"'w' \(built in code\) leaves device = \"auto\""):
        Runner(built, RunLayout(tmp_path, "w")).run("prepare")
    assert not (tmp_path / "runs").exists()  # refused before anything ran
    assert set(_devices(pin_workflow(built)).values()) == {"cpu"}


def test_the_device_marker_is_registered(pytestconfig):
    assert any(line.startswith("device: tests written for a GPU; skipped without CUDA")
               for line in pytestconfig.getini("markers"))
