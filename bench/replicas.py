"""The ``replicas`` phase: one Parley replica against two behind one Envoy (see ``bench/run.py``).

The stack of this phase is its own: Redis, a throwaway PostgreSQL cluster, two replicas
(``python -m parley`` with ``PARLEY_REDIS_URL``, ``PARLEY_DATABASE_URL`` on PostgreSQL, one
``PARLEY_JWT_SECRET``, each its own gRPC port and data directory) and two Envoys rendered from
the repository's template: one with replica 1 as its only upstream, one with both. Both replicas
run throughout, so the 1-replica and 2-replica runs alternate within each level and path (drift
hits both), the way the stream phase alternates its paths. The upstream is the run's own
(``bench/upstream.py``, shared with the other phases).

Two paths, both through Envoy: ``envoy-rest`` (REST/SSE, transcoded) and ``envoy-grpc`` (native
gRPC to Envoy's listener, h2c, routed to the replicas untranscoded). Every run records the CPU
time of each process (``/proc``), the load generator's (``getrusage``), the machine's busy time
(``/proc/stat``), and how Envoy split the requests between the replicas (its admin ``/clusters``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import resource
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import procs
import report
from phases import LOADGEN, PER_USER_LIMIT, PROMPT, ParleyUser, log, redact

if TYPE_CHECKING:
    from phases import Bench

__all__ = ["COUNTS", "PATHS", "phase_replicas"]

#: Replica counts compared (the ratio is the last over the first).
COUNTS = (1, 2)
#: Paths through Envoy: REST/SSE (transcoded) and native gRPC.
PATHS = ("envoy-rest", "envoy-grpc")
#: Envoy's cluster of ChatService calls (SendMessage goes there; see envoy/envoy.yaml).
CHAT_CLUSTER = "parley_chat"


class Stack:
    """Redis, PostgreSQL, the replicas and one Envoy per replica count."""

    def __init__(self, work: Path, upstream_url: str) -> None:
        self.work = work
        self.upstream_url = upstream_url
        self.redis: procs.Proc | None = None
        self.redis_url = ""
        self.postgres: procs.Postgres | None = None
        self.replicas: list[procs.Proc] = []
        self.targets: list[str] = []
        self.envoys: dict[int, Any] = {}  # replica count -> EnvoyProcess
        self.settings: dict[str, str] = {}

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.redis, self.redis_url = procs.start_redis(self.work)
        log(f"replicas: Redis on {self.redis_url}; creating a PostgreSQL cluster")
        self.postgres = procs.Postgres(self.work)  # kept first: stop() cleans up a failed start
        self.postgres.start()
        self.settings = {
            "openai_compatible": json.dumps(
                {"bench": {"base_url": self.upstream_url, "api_key": "sk-bench"}}
            ),
            "database_url": self.postgres.url,
            "redis_url": self.redis_url,
            "jwt_secret": secrets.token_urlsafe(64),
            "max_concurrent_replies_per_user": PER_USER_LIMIT,
            "access_token_ttl_seconds": "86400",
            "shutdown_grace_seconds": "2",
            "log_level": "INFO",
        }
        # One after the other: each runs the migrations at start, the second finds them done.
        for i in range(1, max(COUNTS) + 1):
            data = self.work / f"replica-{i}"
            data.mkdir(parents=True, exist_ok=True)
            proc, target = procs.start_parley(
                self.work, {**self.settings, "data_dir": str(data)}, f"replica-{i}"
            )
            self.replicas.append(proc)
            self.targets.append(target)
            procs.wait_serving(proc, target)
            log(f"replicas: replica {i} serving on {target}")
        from tests.support.envoy import EnvoyProcess

        for n in COUNTS:
            envoy = EnvoyProcess(self.targets[:n], self.work / f"envoy-{n}").start()
            self.envoys[n] = envoy
            _wait_hosts_healthy(envoy, n)
            log(f"replicas: Envoy for {n} replica(s) on {envoy.base_url}")

    def command(self) -> str:
        """The replicas' command for the record (no secret, no ports)."""
        shown = {
            **self.settings,
            "jwt_secret": "$JWT_SECRET",
            "data_dir": "bench/.work/<run>/replicas/replica-N",
        }
        text = "python -m parley with " + " ".join(
            f"PARLEY_{k.upper()}={shlex.quote(v)}" for k, v in shown.items()
        )
        text += " PARLEY_GRPC_LISTEN=127.0.0.1:$PORT (each replica its own)"
        return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:$PORT", text)

    def stop(self) -> None:
        for envoy in self.envoys.values():
            with contextlib.suppress(Exception):
                envoy.stop()
        for proc in reversed(self.replicas):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()


def _wait_hosts_healthy(envoy: Any, n: int, timeout: float = 30.0) -> None:
    """Wait until Envoy counts all ``n`` replicas of its chat cluster healthy."""
    deadline = time.monotonic() + timeout
    while True:
        hosts = envoy.hosts(CHAT_CLUSTER)
        if len(hosts) == n and not any(hosts.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Envoy's {CHAT_CLUSTER} replicas are not all healthy: {hosts}")
        time.sleep(0.3)


def _requests_per_host(envoy: Any) -> dict[str, int]:
    """Requests Envoy has sent to each replica of its chat cluster so far (``rq_total``)."""
    reply = httpx.get(f"{envoy.admin_url}/clusters", params={"format": "json"}, timeout=5.0)
    reply.raise_for_status()
    out: dict[str, int] = {}
    for status in reply.json().get("cluster_statuses", []):
        if status["name"] != CHAT_CLUSTER:
            continue
        for host in status.get("host_statuses", []):
            address = host["address"]["socket_address"]
            stats = {s.get("name"): int(s.get("value", 0)) for s in host.get("stats", [])}
            out[f"{address['address']}:{address['port_value']}"] = stats.get("rq_total", 0)
    return out


def _version(argv: list[str]) -> str:
    try:
        text = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return "unknown"
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else "unknown"


def _stream_argv(
    path: str, envoy: Any, token: str, clients: int, sessions: list[str], extra: list[str]
) -> list[str]:
    argv = [str(LOADGEN), "stream", "-clients", str(clients), "-prompt", PROMPT, "-timeout", "60s"]
    if path == "envoy-rest":
        argv += ["-kind", "parley-rest", "-url", envoy.base_url, "-token", token]
    else:
        argv += ["-kind", "parley-grpc", "-target", f"127.0.0.1:{envoy.port}", "-token", token]
    return [*argv, "-sessions", ",".join(sessions), *extra]


def _run(
    argv: list[str], cpus: dict[str, Callable[[], float]], envoy: Any, targets: list[str], timeout: float
) -> dict[str, Any]:
    """One load-generator run; its report plus CPU per process, machine busy time, Envoy's split."""
    hosts_before = _requests_per_host(envoy)
    before = {name: read() for name, read in cpus.items()}
    busy = procs.machine_busy_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result: dict[str, Any] = procs.run_json(argv, timeout=timeout)
    wall = time.monotonic() - started
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {name: round(read() - before[name], 3) for name, read in cpus.items()}
    cpu["loadgen"] = round(
        (after_children.ru_utime + after_children.ru_stime) - (children.ru_utime + children.ru_stime), 3
    )
    machine = procs.machine_busy_seconds() - busy
    hosts_after = _requests_per_host(envoy)
    result["cpu_s"] = cpu
    result["wall_s"] = round(wall, 3)
    result["cpu_pct_of_core"] = {
        **{name: round(100 * s / wall, 1) for name, s in cpu.items()},
        "machine": round(100 * machine / wall, 1),
        "unmeasured": round(100 * (machine - sum(cpu.values())) / wall, 1),
    }
    result["requests_per_replica"] = [hosts_after.get(t, 0) - hosts_before.get(t, 0) for t in targets]
    result["load_1m"] = round(os.getloadavg()[0], 2)
    result["error_samples"] = result.get("error_samples") or []
    return result


def phase_replicas(bench: Bench) -> None:
    """1 vs 2 replicas behind one Envoy, each level and path, runs alternating; ratios 2/1."""
    args = bench.args
    assert bench.upstream is not None
    levels: list[int] = args.replica_clients
    paths: list[str] = args.replica_paths
    cores = os.cpu_count() or 1
    runs: list[dict[str, Any]] = []
    rep: dict[str, Any] = {
        "clients": levels,
        "paths": paths,
        "counts": list(COUNTS),
        "tokens_per_second": args.rate,
        "cores": cores,
        "runs": runs,
    }
    rep["note"] = (
        f"Parley replicas (`python -m parley`, each its own gRPC port and PARLEY_DATA_DIR, one "
        "PARLEY_JWT_SECRET) on one PostgreSQL (a throwaway cluster, fsync off) and one Redis, behind "
        "one Envoy: `envoy/envoy.yaml` rendered with 1 or 2 upstreams (least-request balancing, "
        "health checks). Both replicas run throughout: in the 1-replica runs Envoy knows only "
        "replica 1 and replica 2 idles. `envoy-rest` is REST/SSE through Envoy's transcoder, "
        "`envoy-grpc` native gRPC to Envoy's listener (h2c), routed to a replica; one connection per "
        f"client either way. The same upstream as the stream phase ({args.tokens} tokens at "
        f"{args.rate:g} tokens/s per stream); each of N clients streams one reply after the other for "
        f"{args.duration:g} s in its own session, all clients one user (limit of replies at once raised "
        f"to {PER_USER_LIMIT}). The 1- and 2-replica runs alternate within each level and path. "
        "`split` is how many of the run's SendMessage calls Envoy sent to each replica."
    )
    bench.results["replicas"] = rep
    bench.results["versions"]["PostgreSQL"] = _version([procs.pg_bin("postgres"), "--version"])
    bench.results["versions"]["Redis"] = _version(["redis-server", "--version"])
    stack = Stack(bench.work / "replicas", bench.upstream_url)
    user: ParleyUser | None = None
    try:
        stack.start()
        bench.commands["replicas: each replica"] = stack.command()
        user = ParleyUser(stack.targets[0])
        agent = user.agent(model="bench/bench-model", max_output_tokens=args.tokens)
        upstream = bench.upstream
        redis, postgres = stack.redis, stack.postgres
        assert redis is not None and postgres is not None
        base: dict[str, Callable[[], float]] = {
            **{f"replica {i + 1}": proc.cpu for i, proc in enumerate(stack.replicas)},
            "upstream": upstream.cpu,
            "redis": redis.cpu,
            "postgres": postgres.cpu,
        }
        log("replicas: warming up every path and replica count (not recorded)")
        for n in COUNTS:
            for path in paths:
                warm = _stream_argv(path, stack.envoys[n], user.token, 4, user.sessions(agent, 4),
                                    ["-duration", "1ms", "-per-client", "1"])  # fmt: skip
                result = procs.run_json(warm, timeout=120)
                if result["errors"]:
                    raise RuntimeError(
                        f"warm-up of {path} with {n} replica(s) failed: {result['error_samples']}"
                    )
        for clients in levels:
            for path in paths:
                for n in COUNTS:
                    envoy = stack.envoys[n]
                    envoy_cpu: Callable[[], float] = functools.partial(procs.cpu_seconds, envoy.process.pid)
                    cpus = {**base, "envoy": envoy_cpu}
                    sessions = user.sessions(agent, clients)
                    argv = _stream_argv(path, envoy, user.token, clients, sessions, bench._load_extra())
                    bench.commands.setdefault(f"replicas {path}", redact(argv))
                    time.sleep(args.pause)
                    result = _run(argv, cpus, envoy, stack.targets[:n], timeout=args.duration + 180)
                    result.update(path=path, replicas=n)
                    runs.append(result)
                    pct = result["cpu_pct_of_core"]
                    log(f"replicas {path} x{clients:<3d} {n} replica(s): {result['requests']} requests, "
                        f"{result['errors']} errors, TTFT p50 {result['ttft_ms']['p50']:.1f} ms, "
                        f"{result['tokens_per_s']:.0f} tokens/s, split {result['requests_per_replica']}, "
                        f"CPU % of a core {pct}")  # fmt: skip
    finally:
        if user is not None:
            user.close()
        stack.stop()
        rep["ratios"] = report.replica_ratios(runs)
        rep["limits"] = report.replica_limits(rep)
