"""A stage that runs out of device memory says so in one line, naming the stage and the option
to lower, and loses nothing: the same command with a smaller batch finishes (issue 26).

The model is the researcher's own file, whose forward raises torch's own out-of-memory error
for batches larger than a GPU of its size would take (this machine has no GPU to fill)."""

import pytest
import torch
from support import pin_device, run_cli, write_images

pytestmark = pytest.mark.slow  # runs the pipeline in a subprocess

MODEL = '''
import torch
from torch import nn


class Small(nn.Module):
    """conv -> relu -> pool -> linear; batches over 4 images do not fit its "GPU"."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(6, num_classes)

    def forward(self, x):
        if x.shape[0] > 4:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total "
                "capacity)\\nSee documentation for Memory Management")
        x = self.relu(self.conv(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build(num_classes):
    return Small(num_classes)
'''

WORKFLOW = """
name = "oom"
[data]
root = "images"
[model]
factory = "small.py:build"
checkpoint = "weights.pt"
image_size = 32
[activations]
device = "cpu"
batch_size = {batch}
chunk_size = 8
"""


def test_out_of_memory_is_one_line_naming_the_option_and_keeps_the_run(tmp_path):
    write_images(tmp_path / "images", ["cat", "dog"], per_class=6, size=40)
    (tmp_path / "small.py").write_text(MODEL)
    namespace: dict = {}
    exec(MODEL, namespace)
    torch.save(namespace["build"](2).state_dict(), tmp_path / "weights.pt")
    (tmp_path / "oom.toml").write_text(pin_device(WORKFLOW.format(batch=8)))

    failed = run_cli("run", "activations", "-w", "oom.toml", cwd=tmp_path)
    assert failed.returncode == 2, failed.stderr[-2000:]
    error = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert error[0].startswith("error: [activations] ran out of memory on cpu"), error[0]
    assert "lower [activations] batch_size (now 8)" in error[0]
    assert (tmp_path / "runs" / "oom" / "manifest.parquet").exists()  # prepare's work is kept

    (tmp_path / "oom.toml").write_text(pin_device(WORKFLOW.format(batch=4)))
    done = run_cli("run", "activations", "-w", "oom.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[prepare] running" not in done.stdout  # prepare's work was kept
    assert (tmp_path / "runs" / "oom" / "activations.zarr").is_dir()
