"""Processes of a benchmark run: the upstream, Parley, Envoy, LiteLLM proxy, llama.cpp server,
and for the replicas phase Redis and a throwaway PostgreSQL cluster.

Every process is started on a free loopback port with its own log under the run's work
directory, in its own session, and stopped by its process id (SIGTERM, then SIGKILL of its
process group after a timeout). CPU time is read from ``/proc`` so a run can say how much each
server spent.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = [
    "LITELLM_PYTHON",
    "ROOT",
    "Postgres",
    "Proc",
    "cpu_seconds",
    "descendants",
    "free_port",
    "litellm_config",
    "machine_busy_seconds",
    "pg_bin",
    "set_autogroup_nice",
    "start_litellm",
    "start_llama_server",
    "start_parley",
    "start_redis",
    "start_upstream",
]

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_PYTHON = LITELLM_VENV / "bin" / "python"
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_autogroup_nice(pid: int, nice: int) -> bool:
    """Give process ``pid``'s scheduler autogroup the ``nice`` value ``nice`` (``/proc/PID/autogroup``,
    sched(7)): where the kernel autogroups, it shares the CPU between sessions before it weighs the
    threads of one by their own nice, so a process's nice counts against other sessions only
    through its autogroup's. ``pid`` should lead a session of its own (``start_new_session``), or
    the value applies to every process of its session. False where there are no autogroups or the
    write is refused (a negative value needs CAP_SYS_NICE)."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")
    except OSError:
        return False
    return True


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (children, their children ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU time (s) of ``pid`` and its live descendants; 0 if it is gone. With
    ``reaped``, also that of the children ``pid`` has waited for (a server whose workers come and
    go, like PostgreSQL's backends: without it, a backend that exits takes its CPU time along)."""
    total = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        if reaped and p == pid:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: children waited for
    return total / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds all cores together have spent busy since boot (``/proc/stat``: user, nice,
    system, irq, softirq, steal), whoever ran: the benchmark's processes and anything else."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


class Proc:
    """A child process with a log file, a readiness probe, and a stop by pid."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its children
        )
        self.pid = self.process.pid

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> Proc:
        """Poll ``probe`` until it returns True.

        Raises:
            RuntimeError: if the process exits or ``timeout`` seconds pass (with its log's tail).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if probe():
                    return self
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM this process; SIGKILL its process group if it is still there after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)  # the group this process leads
                self.process.wait()
        self._log.close()


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    return httpx.get(url, headers=headers, timeout=2.0).status_code == 200


def start_upstream(
    work: Path, *, tokens: int, rate: float, model: str = "bench-model", name: str = "upstream"
) -> tuple[Proc, str]:
    """The fixed-rate upstream (bench/upstream.py); returns it and its base URL (``…/v1``).
    ``name`` names the process and its log (``<work>/<name>.log``)."""
    port = free_port()
    proc = Proc(
        name,
        [
            sys.executable,
            str(ROOT / "bench" / "upstream.py"),
            "--port",
            str(port),
            "--tokens",
            str(tokens),
            "--tokens-per-second",
            str(rate),
            "--model",
            model,
        ],
        work / f"{name}.log",
    )
    base = f"http://127.0.0.1:{port}"
    proc.wait_ready(lambda: _http_ok(f"{base}/health"), 30)
    return proc, f"{base}/v1"


def start_parley(
    work: Path, settings: dict[str, str], name: str = "parley", env: dict[str, str] | None = None
) -> tuple[Proc, str]:
    """``python -m parley`` with ``PARLEY_<KEY>`` settings; not waited for (see ``wait_serving``).
    ``settings`` win over the defaults below (a replica passes its own ``data_dir`` and
    ``database_url``); ``name`` names the process and its log (``<work>/<name>.log``); ``env``
    adds variables that are not settings (``OTEL_*``).

    Returns the process and its gRPC target (``127.0.0.1:PORT``).
    """
    port = free_port()
    target = f"127.0.0.1:{port}"
    # The data dir outlives runs: it keeps the Whisper model Parley joins there once (140 MB).
    # The database is the run's own.
    data = ROOT / "bench" / ".work" / "parley-data"
    data.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PARLEY_GRPC_LISTEN": target,
        "PARLEY_DATA_DIR": str(data),
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'parley.db'}",
        # Metrics on, as by default, but on a port of its own: several Parleys run at once here.
        "PARLEY_METRICS_LISTEN": "127.0.0.1:0",
        **{f"PARLEY_{k.upper()}": v for k, v in settings.items()},
        **(env or {}),
    }
    return Proc(name, [sys.executable, "-m", "parley"], work / f"{name}.log", env), target


def wait_serving(proc: Proc, target: str, timeout: float = 180.0) -> None:
    """Wait until Parley's grpc.health.v1 service says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        proc.wait_ready(serving, timeout)


def _redis_pong(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def start_redis(work: Path) -> tuple[Proc, str]:
    """``redis-server`` on a free loopback port, no persistence; waits until it answers PING.

    Returns the process and its URL (``redis://127.0.0.1:PORT/0``).
    """
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server not found: install Debian's redis-server package")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(work)]  # fmt: skip
    proc = Proc("redis", argv, work / "redis.log")
    proc.wait_ready(lambda: _redis_pong(port), 15)
    return proc, f"redis://127.0.0.1:{port}/0"


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return path


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb refuses to run as root: as root, the cluster belongs to Debian's `postgres` user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Postgres:
    """A throwaway PostgreSQL cluster (Debian's binaries) on a free loopback port, with database
    ``parley``; the same recipe as the tests' (tests/support/postgres.py), which bench/ does not
    import. Durability is off (``fsync``, ``full_page_writes``): the data is thrown away.

    The cluster lives in a temporary directory (the ``postgres`` user must be able to reach it);
    ``stop`` copies its log to ``<work>/postgres.log`` and deletes it.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.root = Path(tempfile.mkdtemp(prefix="parley-bench-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql+asyncpg://parley@127.0.0.1:{self.port}/parley"
        self.pid = 0
        self.argv: list[str] = []

    def start(self) -> Postgres:
        """initdb, start (waits), create database ``parley``; ``pid`` is then the postmaster's."""
        initdb = [pg_bin("initdb"), "-D", str(self.data), "-U", "parley", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync"]  # fmt: skip
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
        options = f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off -c full_page_writes=off"
        self.argv = [pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"),
                     "-w", "-t", "60", "-o", options, "start"]  # fmt: skip
        subprocess.run(_as_postgres(self.argv), check=True, capture_output=True)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        createdb = [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "parley", "parley"]
        deadline = time.monotonic() + 30
        while (done := subprocess.run(createdb, capture_output=True, text=True, check=False)).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {done.stderr}")
            time.sleep(0.3)
        return self

    def cpu(self) -> float:
        """CPU seconds of the postmaster and its backends, those that have exited included
        (SQLAlchemy's pool closes its overflow connections)."""
        return cpu_seconds(self.pid, reaped=True) if self.pid else 0.0

    def stop(self) -> None:
        if self.data.exists():
            stop = [pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            subprocess.run(_as_postgres(stop), capture_output=True, check=False)
        log = self.root / "postgres.log"
        if log.exists():
            shutil.copyfile(log, self.work / "postgres.log")
        shutil.rmtree(self.root, ignore_errors=True)


def litellm_config(models: dict[str, tuple[str, str]], master_key: str) -> str:
    """LiteLLM proxy config (YAML is a superset of JSON): ``models`` maps a public model name to
    (the upstream's model id, the upstream's base URL); every one is an ``openai/`` model."""
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/{model}", "api_base": base, "api_key": "sk-bench"},
            }
            for name, (model, base) in models.items()
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": master_key},
    }
    return json.dumps(config, indent=2)


def start_litellm(work: Path, models: dict[str, tuple[str, str]]) -> tuple[Proc, str, str]:
    """LiteLLM proxy (from bench/.venv-litellm), one uvicorn worker; not waited for.

    Returns the process, its base URL (``…/v1``) and its master key. ``LITELLM_LOCAL_MODEL_COST_MAP``
    keeps it from fetching its price list from the network at start.
    """
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(16)
    config = work / "litellm.yaml"
    config.write_text(litellm_config(models, key))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "VIRTUAL_ENV"))},
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    proc = Proc(
        "litellm",
        [
            str(LITELLM_VENV / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        work / "litellm.log",
        env,
        cwd=work,
    )
    return proc, f"http://127.0.0.1:{port}/v1", key


def wait_litellm(proc: Proc, base: str, key: str, timeout: float = 180.0) -> None:
    origin = base.removesuffix("/v1")
    proc.wait_ready(lambda: _http_ok(f"{origin}/health/liveliness"), timeout)
    proc.wait_ready(lambda: _http_ok(f"{base}/models", {"Authorization": f"Bearer {key}"}), timeout)


def start_llama_server(work: Path, model_path: Path, port: int, threads: int) -> tuple[Proc, str]:
    """``scripts/llama_server.py`` (llama.cpp's server engine) on ``port`` serving ``model_path``;
    waits until it answers."""
    proc = Proc(
        "llama.cpp server",
        [
            sys.executable,
            str(Path(__file__).resolve().parent.parent / "scripts" / "llama_server.py"),
            "--model",
            str(model_path),
            "--alias",
            "smollm2",
            "--port",
            str(port),
            "--ctx",
            "2048",
            "--threads",
            str(threads),
        ],
        work / "llama-server.log",
    )
    base = f"http://127.0.0.1:{port}/v1"
    proc.wait_ready(lambda: _http_ok(f"{base}/models"), 120)
    return proc, base


def run_json(argv: Sequence[str], *, timeout: float, stdin: str | None = None) -> Any:
    """Run a command that prints one JSON document; raise with its stderr if it fails."""
    result = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)
