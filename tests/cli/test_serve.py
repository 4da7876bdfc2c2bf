"""``python -m pipeline serve`` serves the atlas folder and prints where."""

from __future__ import annotations

import os
import re
import subprocess
from urllib.request import urlopen

import pytest
from support import REPO, cli_argv, run_cli

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess


def test_serve_prints_a_url_that_serves_the_atlas(tiny_run):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(cli_argv("serve", "-w", "workflows/tiny.toml", "--port", "0",
                                       cwd=tiny_run), cwd=tiny_run, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urlopen(url) as response:
            assert response.status == 200 and b"conv1" in response.read()
        with urlopen(url + "units/conv2/3.html") as response:
            assert response.status == 200
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_without_an_atlas_is_one_line_and_exit_2(tmp_path, write_workflow):
    from support import TINY_DEMO

    write_workflow(TINY_DEMO)
    result = run_cli("serve", "-w", "workflows/tiny.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "index.html" in result.stderr
    assert "run all" in result.stderr
