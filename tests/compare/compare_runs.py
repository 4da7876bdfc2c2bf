"""What the compare tests share besides fixtures: their workflows and names with markup."""

from __future__ import annotations

from pathlib import Path

from support import TINY_DEMO_UNPINNED, pin_device, run_cli

# The stages compare does not read are turned off: the experiment stages may still be stubs.
OFF = "\n[occlusion]\nimages = 0\n[invariance]\nimages = 0\n[sanity]\nenabled = false\n"
EVIL = "<script>alert('x')</script>\"&"  # a class folder name ("/" cannot be in one)
EVIL_RUN = "<b>run&'"  # a run's name: the site's title and captions


def seed_workflow(seed: int) -> str:
    """The tiny demo trained with ``seed``: no snapshots, one projection method (faster),
    devices pinned to the CPU."""
    replaced = {"snapshot_epochs = [1, 2]": f"snapshot_epochs = []\nseed = {seed}",
                'methods = ["deconvnet", "guided", "gradient"]': 'methods = ["deconvnet"]'}
    text = TINY_DEMO_UNPINNED
    for old, new in replaced.items():
        assert old in text, f"TINY_DEMO changed: {old!r} is gone"
        text = text.replace(old, new)
    return pin_device(text + OFF)


def write(base: Path, name: str, text: str) -> Path:
    path = base / "workflows" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def finish(base: Path, *names: str) -> None:
    """Run each workflow up to the projections (all that compare reads)."""
    for name in names:
        result = run_cli("run", "deconv", "-w", f"workflows/{name}.toml", cwd=base)
        assert result.returncode == 0, result.stderr[-3000:]
