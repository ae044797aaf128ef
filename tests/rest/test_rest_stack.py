"""scripts/run_stack.py (what `make run` runs) and scripts/validate_envoy.sh (what CI runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from parley.config import Settings

from tests.conftest import TEST_JWT_SECRET
from tests.support.envoy import render_module
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_envoy_config_validates() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "validate_envoy.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "envoy config (local profile) is valid" in result.stdout
    assert "envoy config (compose profile) is valid" in result.stdout


def test_make_run_listens_on_loopback_only_by_default() -> None:
    """`make run` binds gRPC and REST to 127.0.0.1 unless PARLEY_GRPC_LISTEN / PARLEY_REST_LISTEN say
    otherwise; the container profile of Envoy listens on every interface, as containers need."""
    assert Settings.model_fields["grpc_listen"].default == "127.0.0.1:50051"
    assert Settings.model_fields["rest_listen"].default == "127.0.0.1:8080"
    profiles = render_module().PROFILES
    assert profiles["local"].listen_address == "127.0.0.1"
    assert profiles["local"].admin_address == profiles["compose"].admin_address == "127.0.0.1"
    assert profiles["compose"].listen_address == "0.0.0.0"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


class _Stack:
    def __init__(self, tmp: Path) -> None:
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.log_path = tmp / "run_stack.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "run_stack.py"),
                "--admin",
                f"127.0.0.1:{free_port()}",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "PARLEY_GRPC_LISTEN": f"127.0.0.1:{self.grpc_port}",
                "PARLEY_REST_LISTEN": f"127.0.0.1:{self.rest_port}",  # as an operator sets it
                "PARLEY_DATA_DIR": str(tmp / "data"),
                "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'data' / 'parley.db'}",
                "PARLEY_JWT_SECRET": TEST_JWT_SECRET,
                "PARLEY_DEFAULT_MAX_OUTPUT_TOKENS": "24",
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.base_url = f"http://127.0.0.1:{self.rest_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while True:
                assert self.process.poll() is None, self.log()
                try:
                    if client.get(f"{self.base_url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.3)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[_Stack]:
    s = _Stack(tmp_path)
    yield s
    s.close()


def _assert_gone(pids: list[int], port: int) -> None:
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=2) as client:
        client.get(f"http://127.0.0.1:{port}/healthz")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stack_serves_rest_and_stops_cleanly(stack: _Stack, sig: signal.Signals) -> None:
    stack.wait_healthy()
    children = _children(stack.process.pid)
    assert len(children) == 2, children  # the server and Envoy
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        created = client.post(
            "/v1/users", json={"username": "stack-user", "password": "correct horse battery"}
        )
        assert created.status_code == 200, created.text
        assert client.get("/docs").status_code == 200
    stack.process.send_signal(sig)
    assert stack.process.wait(60) == 0, stack.log()
    _assert_gone(children, stack.rest_port)
    assert f"run_stack: gRPC on 127.0.0.1:{stack.grpc_port}, REST on {stack.base_url}" in stack.log()


def test_run_stack_exits_when_a_process_dies(stack: _Stack) -> None:
    stack.wait_healthy()
    commands = {
        pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in _children(stack.process.pid)
    }
    (server_pid,) = [pid for pid, argv in commands.items() if argv[1:3] == [b"-m", b"parley"]]
    (envoy_pid,) = [pid for pid, argv in commands.items() if argv[0].endswith(b"/envoy")]
    os.kill(server_pid, signal.SIGKILL)
    assert stack.process.wait(60) == 1, stack.log()
    _assert_gone([server_pid, envoy_pid], stack.rest_port)
