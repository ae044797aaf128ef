"""The ``telemetry`` phase: what Prometheus metrics and OpenTelemetry tracing cost (``bench/run.py``).

Three Parley processes of their own, side by side on one upstream (``bench/upstream.py``, the
stream phase's tokens and rate): ``off`` with ``PARLEY_METRICS_LISTEN=`` (no metrics endpoint, no
instrumentation) and no ``OTEL_*`` variables (no tracer provider); ``metrics``, the default
install, with the metrics endpoint on a loopback port scraped every ``SCRAPE_INTERVAL_S`` seconds
during the run (three times Prometheus's default rate); ``tracing``, metrics as well and traces of
every RPC exported over OTLP/HTTP to ``bench/otlp_sink.py``, always sampled (the costliest
setting). Each concurrency level runs all three, one after the other, ``--telemetry-repeats`` times (the
order rotates every time, so drift hits all); the load generator streams over gRPC, a new session
per client. Reported per run: TTFT p50/p99, tokens/s, the Parley process's CPU per 1,000 tokens;
then the ratios of each against ``off``, a mode's repeated runs pooled (CPU over all their
tokens, mean tokens/s, median TTFT): one 10 s run on 2 shared cores varies by 10-20 %.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import procs
from phases import LOADGEN, PER_USER_LIMIT, PROMPT, ROOT, ParleyUser, log, redact

if TYPE_CHECKING:
    from phases import Bench

__all__ = ["COLUMNS", "markdown_section", "phase_telemetry"]

#: Seconds between two scrapes of ``/metrics`` while a run of the ``on`` process lasts.
SCRAPE_INTERVAL_S = 5.0
MODES = ("off", "metrics", "tracing")
COLUMNS = ("clients", "telemetry", "requests", "errors", "TTFT p50 ms", "TTFT p99 ms", "ITL p99 ms",
           "tokens/s", "Parley CPU ms / 1k tokens")  # fmt: skip
RATIO_COLUMNS = ("clients", "ratio", "TTFT p50", "TTFT p99", "tokens/s", "CPU / 1k tokens")


class _Scraper:
    """GETs ``url`` every ``SCRAPE_INTERVAL_S`` seconds in a thread while it runs; counts scrapes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL_S):
            with urllib.request.urlopen(self.url, timeout=5) as r:
                self.bytes += len(r.read())
            self.scrapes += 1


def phase_telemetry(bench: Bench) -> None:
    a = bench.args
    work = bench.work / "telemetry"
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {"note": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(), "runs": runs}
    bench.results["telemetry"] = result
    upstream, upstream_url = procs.start_upstream(work, tokens=a.tokens, rate=a.rate)
    sink_port = procs.free_port()
    sink = procs.Proc("otlp sink", [sys.executable, str(ROOT / "bench" / "otlp_sink.py"), str(sink_port)],
                      work / "otlp-sink.log")  # fmt: skip
    metrics_ports = {mode: procs.free_port() for mode in MODES if mode != "off"}
    servers: dict[str, tuple[procs.Proc, str]] = {}
    users: dict[str, ParleyUser] = {}
    try:
        common = {
            "openai_compatible": json.dumps({"bench": {"base_url": upstream_url, "api_key": "sk-bench"}}),
            "access_token_ttl_seconds": "86400",
            "max_concurrent_replies_per_user": str(PER_USER_LIMIT),
        }
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        for mode in MODES:
            port = metrics_ports.get(mode)
            settings = {**common, "metrics_listen": f"127.0.0.1:{port}" if port else ""}
            mode_work = work / mode
            mode_work.mkdir(exist_ok=True)
            servers[mode] = procs.start_parley(
                mode_work, settings, name=f"parley-telemetry-{mode}", env=otel if mode == "tracing" else None
            )
            bench.commands[f"telemetry {mode}: parley"] = (
                (" ".join(f"{k}={v}" for k, v in otel.items()) + " " if mode == "tracing" else "")
                + "python -m parley with "
                + " ".join(f"PARLEY_{k.upper()}={shlex.quote(v)}" for k, v in settings.items())
            ).replace(upstream_url, "http://127.0.0.1:$UPSTREAM/v1")
        for mode, (proc, target) in servers.items():
            procs.wait_serving(proc, target)
            users[mode] = ParleyUser(target)
        agents = {m: u.agent(model="bench/bench-model", max_output_tokens=a.tokens) for m, u in users.items()}
        order = 0
        for clients in a.telemetry_clients:
            for _ in range(a.telemetry_repeats):
                for mode in MODES[order % len(MODES) :] + MODES[: order % len(MODES)]:
                    port = metrics_ports.get(mode)
                    metrics_url = f"http://127.0.0.1:{port}/metrics" if port else None
                    run = _run(bench, mode, clients, servers[mode], users[mode], agents[mode], metrics_url)
                    runs.append(run)
                order += 1
        with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/stats", timeout=5) as r:
            result["otlp_sink"] = json.loads(r.read())
        result["ratios"] = ratios(runs)
    finally:
        for user in users.values():
            user.close()
        for proc, _ in servers.values():
            proc.stop()
        sink.stop()
        upstream.stop()


def _run(
    bench: Bench,
    mode: str,
    clients: int,
    server: tuple[procs.Proc, str],
    user: ParleyUser,
    agent: str,
    metrics_url: str | None,
) -> dict[str, Any]:
    """One load-generator run against one of the two Parleys; scrapes ``metrics_url`` meanwhile."""
    a = bench.args
    proc, target = server
    sessions = user.sessions(agent, clients)
    argv = [str(LOADGEN), "stream", "-kind", "parley-grpc", "-target", target, "-token", user.token,
            "-clients", str(clients), "-sessions", ",".join(sessions), "-prompt", PROMPT,
            "-timeout", "60s", "-duration", f"{a.duration:g}s", "-ramp", f"{a.ramp:g}s",
            "-max-tokens", str(a.tokens), "-expect-tokens", str(a.tokens)]  # fmt: skip
    bench.commands.setdefault(f"telemetry {mode}: stream", redact(argv))
    time.sleep(a.pause)
    before = procs.cpu_seconds(proc.pid)
    if metrics_url:
        with _Scraper(metrics_url) as scraper:
            run: dict[str, Any] = procs.run_json(argv, timeout=a.duration + 180)
        run["scrapes"] = scraper.scrapes
        run["metrics_bytes"] = scraper.bytes // max(1, scraper.scrapes)
    else:
        run = procs.run_json(argv, timeout=a.duration + 180)
    cpu = procs.cpu_seconds(proc.pid) - before
    run.update(clients=clients, telemetry=mode, parley_cpu_s=round(cpu, 3))
    run["cpu_ms_per_1k_tokens"] = round(cpu * 1e6 / run["tokens"], 1) if run["tokens"] else None
    log(f"telemetry {mode:3s} x{clients:<3d}: {run['requests']} requests, {run['errors']} errors, "
        f"TTFT p50 {run['ttft_ms']['p50']:.1f} ms, {run['tokens_per_s']:.0f} tokens/s, "
        f"{run['cpu_ms_per_1k_tokens']} CPU ms / 1k tokens")  # fmt: skip
    return run


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _pooled(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """One mode's runs at one level together: CPU per 1,000 tokens over all of them, mean
    tokens/s, median of the runs' TTFT p50 and p99."""
    tokens = sum(r["tokens"] for r in runs)
    return {
        "ttft_p50": statistics.median(r["ttft_ms"]["p50"] for r in runs),
        "ttft_p99": statistics.median(r["ttft_ms"]["p99"] for r in runs),
        "tokens_per_s": statistics.fmean(r["tokens_per_s"] for r in runs),
        "cpu_per_1k_tokens": sum(r["parley_cpu_s"] for r in runs) * 1e6 / tokens if tokens else None,
    }


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each mode against ``off`` per concurrency level, the repeated runs of a mode pooled
    (``_pooled``): above 1 means it made the run slower or costlier (tokens/s: below 1 means
    fewer delivered)."""
    out = []
    for clients in sorted({r["clients"] for r in runs}):
        pooled = {}
        for mode in MODES:
            mine = [r for r in runs if r["clients"] == clients and r["telemetry"] == mode and r["ttft_ms"]]
            if mine:
                pooled[mode] = _pooled(mine)
        off = pooled.get("off")
        for mode in MODES[1:]:
            on = pooled.get(mode)
            if on is None or off is None:
                continue
            row: dict[str, Any] = {"clients": clients, "ratio": f"{mode}/off"}
            row.update({key: _div(on[key], off[key]) for key in on})
            out.append(row)
    return out


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown_section(result: dict[str, Any]) -> list[str]:
    """The report's section for ``results["telemetry"]``."""

    def table(columns: tuple[str, ...], rows: list[list[Any]]) -> list[str]:
        return ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"] + [
            "| " + " | ".join(str(c) for c in row) + " |" for row in rows
        ]

    rows = [
        [r["clients"], r["telemetry"], r["requests"], r["errors"], _f(r["ttft_ms"].get("p50")),
         _f(r["ttft_ms"].get("p99")), _f(r["itl_ms"].get("p99")), _f(r["tokens_per_s"]),
         _f(r["cpu_ms_per_1k_tokens"])]
        for r in result["runs"]
    ]  # fmt: skip
    ratio_rows = [
        [r["clients"], r["ratio"], r["ttft_p50"], r["ttft_p99"], r["tokens_per_s"], r["cpu_per_1k_tokens"]]
        for r in result.get("ratios", [])
    ]
    sink = result.get("otlp_sink") or {}
    return [
        "## Telemetry: what metrics and tracing cost",
        "",
        result["note"],
        "",
        *table(COLUMNS, rows),
        "",
        *table(RATIO_COLUMNS, ratio_rows),
        "",
        f"The OTLP sink received {sink.get('requests', '-')} export requests "
        f"({sink.get('bytes', '-')} bytes).",
        "",
    ]
