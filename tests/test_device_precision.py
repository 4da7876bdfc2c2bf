"""What a stage computes with (issue 26): the device is one this machine has, float32 means
float32 (TF32 only where a workflow allows it), and running out of memory is never a reason to
take a path that needs more."""

from __future__ import annotations

import shutil

import pytest
import torch
from support import REPO, TINY_DEMO, device_sections

from pipeline.cli import main
from pipeline.config import load_workflow
from pipeline.device import Compute, check_available, compute_on, out_of_memory, tf32_allowed
from pipeline.errors import UserError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
no_mps = pytest.mark.skipif(bool(getattr(torch.backends, "mps", None)
                                 and torch.backends.mps.is_available()), reason="MPS is here")


@pytest.fixture(autouse=True)
def _restore_precision():
    """compute_on sets torch's process-wide flags: leave them as the test found them."""
    allowed = tf32_allowed()
    yield
    compute_on("cpu", tf32=allowed)


def test_float32_turns_tf32_off_and_the_opt_in_turns_it_on():
    compute_on("cpu", tf32=True)
    assert tf32_allowed()
    device, compute = compute_on("cpu")
    assert device == torch.device("cpu") and not tf32_allowed()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert compute == Compute("cpu", "float32")
    # TF32 is CUDA's: on the CPU the opt-in changes no arithmetic, and the record says so
    _, compute = compute_on("cpu", tf32=True, bf16=True, deterministic=True)
    assert tf32_allowed() and compute == Compute("cpu", "float32", bf16=True)
    assert compute.describe() == "cpu, float32, bf16 autocast"


def test_the_record_survives_a_stamp():
    compute = Compute("cuda:0", "tf32", bf16=True, deterministic=True)
    assert Compute.from_json(compute.to_json()) == compute
    assert compute.describe() == "cuda:0, tf32, bf16 autocast, deterministic"


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:7"])
def test_cuda_without_cuda_is_refused_in_one_line(spec):
    with pytest.raises(UserError, match=f"device '{spec}' asked for, but CUDA is not available"):
        check_available(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_past_the_last_gpu_is_refused():
    count = torch.cuda.device_count()
    with pytest.raises(UserError, match=f"this machine has {count} CUDA device"):
        check_available(f"cuda:{count}")


@no_mps
def test_mps_without_mps_is_refused():
    with pytest.raises(UserError, match="MPS .* is not available"):
        check_available("mps")


@no_cuda
@pytest.mark.parametrize("spec", ["cuda:7", "cuda"])
def test_preflight_refuses_the_activations_device_when_no_cluster_runs_them(
        spec, tmp_path, capsys, monkeypatch):
    """The activations' device is someone else's only on a dask cluster: run here, a GPU this
    machine lacks is refused before any stage runs, in one line."""
    (tmp_path / "workflows").mkdir()
    text = TINY_DEMO.replace('[activations]\ndevice = "cpu"', f'[activations]\ndevice = "{spec}"')
    assert f'device = "{spec}"' in text
    (tmp_path / "workflows" / "gpu.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["run", "all", "-w", "workflows/gpu.toml"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and out == "", (out, err)
    assert f"[activations] device '{spec}' asked for, but CUDA is not available" in err
    assert not (tmp_path / "runs").exists()


def test_memory_errors_are_known_by_their_type_and_message():
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried "
                                      "to allocate 123 bytes"))
    assert not out_of_memory(RuntimeError("shape '[2, 3]' is invalid for input of size 5"))
    assert not out_of_memory(ValueError("out of memory"))  # not torch's


def test_the_gpu_smoke_workflow_puts_every_stage_on_cuda():
    """What the smoke test is for: every stage on CUDA, with the GPU path's options on."""
    workflow = load_workflow(REPO / "workflows" / "gpu-smoke.toml")
    assert {name: getattr(workflow, name).device for name in device_sections()} == \
        dict.fromkeys(device_sections(), "cuda")
    spec = workflow.activations
    assert spec.bf16 and spec.channels_last and spec.num_workers > 0
    assert set(workflow.deconv.methods) == {"deconvnet", "guided", "gradient"}
    assert workflow.train.enabled and len(workflow.train.snapshot_epochs) >= 2  # evolution runs


@no_cuda
def test_without_cuda_the_smoke_test_is_refused_before_anything_runs(tmp_path, capsys,
                                                                      monkeypatch):
    (tmp_path / "workflows").mkdir()
    shutil.copy(REPO / "workflows" / "gpu-smoke.toml", tmp_path / "workflows")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["run", "all", "-w", "workflows/gpu-smoke.toml"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, (out, err)
    assert "device 'cuda' asked for, but CUDA is not available" in err
    assert not (tmp_path / "runs").exists()


def test_on_the_cpu_a_callers_deterministic_setting_is_left_alone():
    """Deterministic algorithms are CUDA's question: on the CPU, stages neither turn them on
    nor turn off what a program using this package turned on."""
    assert not torch.are_deterministic_algorithms_enabled()
    compute_on("cpu", deterministic=True)
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        compute_on("cpu")
        compute_on("cpu", deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
