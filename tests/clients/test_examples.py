"""Each client's example runs against the live server and prints a streamed reply.

Every example registers a new user, logs in, creates an agent and a session, sends a message and
prints the reply as it streams in, then ``completed: <message name> (<n> output tokens)``. The
Go and TypeScript toolchains come from ``bash scripts/install-client-tools.sh``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
COMPLETED = re.compile(
    r"^completed: (sessions/[^/\s]+/messages/[^/\s]+) \((\d+) output tokens\)$", re.MULTILINE
)


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).is_file():
        pytest.fail("Go not found (PATH or /usr/local/go/bin): the Go client needs Go >= 1.26")
    return go


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found (Debian: apt-get install npm)")
    if not (ROOT / "clients/typescript/node_modules/.bin/tsc").exists():
        pytest.fail("clients/typescript/node_modules is missing: run `bash scripts/install-client-tools.sh`")
    return npm


def run_example(argv: list[str], cwd: Path, server: ServerProcess, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env["PARLEY_SERVER"] = server.target
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def assert_streamed_reply(output: str) -> None:
    assert re.search(r"^registered: users/\S+ \((py|go|ts)-example-[0-9a-f]{10}\)$", output, re.MULTILINE), (
        output
    )
    assert re.search(r"^agent: agents/\S+$", output, re.MULTILINE), output
    assert re.search(r"^session: sessions/\S+$", output, re.MULTILINE), output
    reply = re.search(r"^agent: (?!agents/)(.+)$", output, re.MULTILINE)
    assert reply is not None and reply.group(1).strip(), f"no reply text:\n{output}"
    completed = COMPLETED.search(output)
    assert completed is not None, output
    session = re.search(r"^session: (\S+)$", output, re.MULTILINE)
    assert session is not None and completed.group(1).startswith(session.group(1) + "/messages/")
    assert int(completed.group(2)) > 0


def test_python_example(server: ServerProcess) -> None:
    output = run_example([sys.executable, "examples/quickstart.py"], ROOT / "clients/python", server)
    assert_streamed_reply(output)


def test_go_example(server: ServerProcess) -> None:
    output = run_example([_go(), "run", "./cmd/example"], ROOT / "clients/go", server)
    assert_streamed_reply(output)


def test_typescript_example(server: ServerProcess) -> None:
    output = run_example([_npm(), "run", "--silent", "example"], ROOT / "clients/typescript", server)
    assert_streamed_reply(output)


def test_go_module_is_formatted_vetted_and_tested() -> None:
    """gofmt, go vet and the unit tests of the hand-written package (clients/go/parley)."""
    go, cwd = _go(), ROOT / "clients/go"
    gofmt = Path(go).resolve().with_name("gofmt")
    unformatted = subprocess.run(
        [str(gofmt), "-l", "parley", "cmd"], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    assert not unformatted.strip(), f"not gofmt-ed: {unformatted}"
    for argv in ([go, "vet", "./..."], [go, "test", "./..."]):
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
