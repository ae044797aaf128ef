"""The README's curl walkthrough runs as written, through a real Envoy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.envoy import EnvoyProcess
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(
    r"<!-- rest-walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- rest-walkthrough:end -->", re.S
)


RUNS_BLOCK = re.compile(
    r"<!-- rest-walkthrough-runs:start -->\s*```bash\n(.*?)```\s*<!-- rest-walkthrough-runs:end -->", re.S
)
#: Printed between the two blocks, to tell their output apart.
SEPARATOR = "=== runs ==="


def _walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match, runs = BLOCK.search(text), RUNS_BLOCK.search(text)
    assert match and runs, "no rest-walkthrough(-runs) block in README.md"
    return f"{match.group(1)}echo '{SEPARATOR}'\n{runs.group(1)}"


def test_curl_walkthrough_runs(
    server_factory: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    for tool in ("curl", "jq"):
        assert shutil.which(tool), f"{tool} is needed (Debian package {tool})"
    # A server of its own: the walkthrough registers the fixed username "ada".
    data = tmp_path_factory.mktemp("readme-rest")
    server = server_factory(data, f"sqlite+aiosqlite:///{data / 'readme.db'}")
    proxy = EnvoyProcess(server.target, data).start()
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _walkthrough()],
            env={**os.environ, "PARLEY_REST": proxy.base_url},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=data,
        )
    finally:
        proxy.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    out, runs = result.stdout.split(SEPARATOR)
    assert "healthz: 200" in out
    assert "/v1/sessions/{session}:sendMessage" in out
    events = [line for line in out.splitlines() if line.startswith("data: ")]
    assert '"messageAccepted"' in events[0] and '"messageCompleted"' in events[-1]
    assert "ROLE_USER: Hello! What is a good name for a cat?" in out
    assert "ROLE_USER: And for a dog?" in out
    assert out.count("ROLE_ASSISTANT: ") == 2
    assert '"code":16' in out and out.rstrip().endswith("HTTP 401")
    # The runs block: the resumed stream's first ids are 2, 3, 4; the cancel answers a status.
    lines = runs.strip().splitlines()
    assert lines[:3] == ["id: 2", "id: 3", "id: 4"], runs
    assert lines[-1] in ("STATUS_INCOMPLETE", "STATUS_COMPLETE"), runs
