"""Run a real Parley server as a child process (``python -m parley``) for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.net import free_port

__all__ = ["ServerProcess"]

ROOT = Path(__file__).resolve().parents[2]
#: The line ``parley.telemetry.setup`` logs once the metrics endpoint is bound (any log format).
_METRICS_LINE = re.compile(r"serving metrics on http://\S+?:(\d+)/metrics")


class ServerProcess:
    """A Parley server on a free loopback port, with its log in ``log_path``. Its Prometheus
    endpoint is on a port of its own choosing (``PARLEY_METRICS_LISTEN=127.0.0.1:0``, unless the
    settings say otherwise): :attr:`metrics_port`."""

    def __init__(
        self, data_dir: Path, database_url: str, *, environ: Mapping[str, str] | None = None, **settings: str
    ) -> None:
        """``settings`` become ``PARLEY_*`` variables (``jwt_secret`` → ``PARLEY_JWT_SECRET``);
        ``environ`` adds variables as named (``OTEL_EXPORTER_OTLP_ENDPOINT`` ...)."""
        self.data_dir = data_dir
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            "PARLEY_GRPC_LISTEN": self.target,
            "PARLEY_DATA_DIR": str(data_dir),
            "PARLEY_DATABASE_URL": database_url,
            "PARLEY_LOG_LEVEL": "INFO",
            "PARLEY_METRICS_LISTEN": "127.0.0.1:0",
            **{f"PARLEY_{k.upper()}": v for k, v in settings.items()},
            **(environ or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        """Start and wait until the health service reports SERVING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "parley"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not become healthy:\n{self.log()}")
                time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def metrics_port(self) -> int:
        """The port of the server's ``/metrics`` endpoint, from its log (the server logs it before
        it reports SERVING). Raises ``LookupError`` when it serves none."""
        found = _METRICS_LINE.findall(self.log())
        if not found:
            raise LookupError(f"the server on {self.target} serves no metrics endpoint")
        return int(found[-1])

    @property
    def metrics_url(self) -> str:
        """``http://127.0.0.1:PORT/metrics`` of this server."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in ``timeout`` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        return self.process.returncode
