"""A shared atlas leaks nothing: user strings are escaped, no local path is written anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import folder_workflow, run_cli, save_random_checkpoint, write_images

EVIL = "<script>alert('x')</script>\"&"  # a class folder name; "/" cannot be in a file name
EVIL_FOLDER = EVIL.replace("/", "")


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory) -> Path:
    """A full run over classes and files whose names carry markup and quotes."""
    base = tmp_path_factory.mktemp("share run")
    data = base / "my data"
    write_images(data, [EVIL_FOLDER, "plain"], per_class=6, size=64, fmt="png")
    checkpoint = save_random_checkpoint(base / "weights" / "model.pt", num_classes=2)
    (base / "workflows").mkdir()
    (base / "workflows" / "evil.toml").write_text(folder_workflow(data, checkpoint))
    result = run_cli("run", "all", "-w", "workflows/evil.toml", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base


def atlas_files(base: Path) -> list[Path]:
    return [path for path in (base / "reports" / "evil").rglob("*") if path.is_file()]


def test_class_and_file_names_are_escaped(evil_run):
    pages = [path for path in atlas_files(evil_run) if path.suffix == ".html"]
    escaped = EVIL_FOLDER.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = escaped.replace('"', "&#34;").replace("'", "&#39;")
    shown = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text, page
        assert EVIL_FOLDER not in text, page
        shown += text.count(escaped)
    assert shown > 0  # the class name and file names (which contain it) are on the pages
    files_shown = sum(page.read_text(encoding="utf-8").count(f"{escaped}/{escaped}_0")
                      for page in pages)
    assert files_shown > 0  # an image file name, escaped, on a unit page
    index = (evil_run / "reports" / "evil" / "assets" / "search-index.js").read_text()
    assert "<" not in index and ">" not in index and "\\u003cscript\\u003e" in index


def test_no_file_holds_an_absolute_local_path(evil_run):
    secrets = {str(evil_run), str(evil_run / "my data"), str(evil_run / "runs" / "evil"),
               str(evil_run.resolve()), str(Path.home())}
    checked = 0
    for path in atlas_files(evil_run):
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"{path.name} contains {secret}"
        checked += 1
    assert checked > 20
