"""The phases of a benchmark run, over one running stack (see ``bench/run.py``)."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gzip
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import procs
import report

__all__ = ["GHZ", "LOADGEN", "Bench", "log", "summarize_profile"]

ROOT = procs.ROOT
LOADGEN = ROOT / "bench" / ".bin" / "loadgen"
GHZ = ROOT / ".tools" / "bin" / "ghz"
SYSTEM = "You are a concise, friendly guide."
PROMPT = "Hello! What is a good name for a cat?"
#: The unary floor's ``path`` in results.json's ``unary`` list.
UNARY_FLOOR_PATH = "gRPC floor (bare grpc.aio)"

#: Raised for the benchmark's one user (the default is 4 replies generating at once).
PER_USER_LIMIT = "100000"
PROFILE_RATE_HZ = 250


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class ParleyUser:
    """The benchmark's one Parley user: a gRPC channel, its access token, resource helpers."""

    def __init__(self, target: str) -> None:
        import grpc

        from tests.support.client import new_user

        self.channel = grpc.insecure_channel(target)
        self.client = new_user(self.channel, prefix="bench")
        self.token = self.client.access_token

    def agent(self, **fields: Any) -> str:
        fields.setdefault("display_name", "Bench agent")
        fields.setdefault("instructions", SYSTEM)
        return str(self.client.create_agent(**fields).name)

    def sessions(self, agent: str, n: int) -> list[str]:
        """``n`` new sessions with ``agent`` (created 8 at a time)."""
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: str(self.client.create_session(agent).name), range(n)))

    def close(self) -> None:
        self.channel.close()


class Bench:
    """The running stack (upstream, Parley, Envoy, LiteLLM) and the results collected so far."""

    def __init__(self, args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
        self.args = args
        self.work = work
        self.results = results
        self.commands: dict[str, str] = {}
        self.procs: list[Any] = []
        self.upstream: procs.Proc | None = None
        self.upstream_url = ""
        self.parley: procs.Proc | None = None
        #: The SQLite Parley's PARLEY_* settings (lower-case keys), as started.
        self.parley_settings: dict[str, str] = {}
        self.target = ""
        self.envoy: Any = None
        self.rest_url = ""
        self.litellm: procs.Proc | None = None
        self.litellm_url = ""
        self.litellm_key = ""
        self.llama_port = procs.free_port()  # Parley's `llamacpp` endpoint, started in phase_llama
        self._user: ParleyUser | None = None

    # --- the stack ---------------------------------------------------------------------------------

    def start(self, with_litellm: bool, with_parley: bool = True) -> None:
        """Start everything (Parley and LiteLLM load at the same time) and wait until ready; with
        ``with_parley`` False, the upstream alone (the replicas phase brings its own Parleys)."""
        args = self.args
        log(
            f"starting the upstream ({args.tokens} tokens at {args.rate:g} tokens/s per stream)"
            + ((", Parley, Envoy, LiteLLM" if with_litellm else ", Parley, Envoy") if with_parley else "")
        )
        self.upstream, self.upstream_url = procs.start_upstream(self.work, tokens=args.tokens, rate=args.rate)
        self.procs.append(self.upstream)
        if not with_parley:
            return
        llama_url = f"http://127.0.0.1:{self.llama_port}/v1"
        endpoints = {
            "bench": {"base_url": self.upstream_url, "api_key": "sk-bench"},
            "llamacpp": {"base_url": llama_url, "api_key": "sk-bench"},
        }
        settings = {
            "openai_compatible": json.dumps(endpoints),
            "max_concurrent_replies_per_user": PER_USER_LIMIT,
            "access_token_ttl_seconds": "86400",  # the run outlives the default 15 minutes
            "shutdown_grace_seconds": "2",
            "log_level": "INFO",
        }
        self.parley_settings = settings
        self.parley, self.target = procs.start_parley(self.work, settings)
        self.procs.append(self.parley)
        self.commands["parley"] = "python -m parley with " + " ".join(
            f"PARLEY_{k.upper()}={shlex.quote(v)}" for k, v in settings.items()
        ).replace(self.upstream_url, "http://127.0.0.1:$UPSTREAM/v1").replace(
            llama_url, "http://127.0.0.1:$LLAMA/v1"
        )
        if with_litellm:
            models = {"bench-model": ("bench-model", self.upstream_url), "smollm2": ("smollm2", llama_url)}
            self.litellm, self.litellm_url, self.litellm_key = procs.start_litellm(self.work, models)
            self.procs.append(self.litellm)
            self.commands["litellm"] = redact(self.litellm.argv)
        procs.wait_serving(self.parley, self.target)
        log(f"Parley serving on {self.target}; starting Envoy")
        from tests.support.envoy import EnvoyProcess

        self.envoy = EnvoyProcess(self.target, self.work).start()
        self.procs.append(self.envoy)
        self.rest_url = self.envoy.base_url
        if self.litellm is not None:
            procs.wait_litellm(self.litellm, self.litellm_url, self.litellm_key)
            log(f"LiteLLM ready on {self.litellm_url}")

    def stop(self) -> None:
        if self._user is not None:
            self._user.close()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()

    @property
    def user(self) -> ParleyUser:
        if self._user is None:
            self._user = ParleyUser(self.target)
        return self._user

    @cached_property
    def bench_agent(self) -> str:
        """The agent whose model is the upstream (``bench/bench-model``)."""
        return self.user.agent(model="bench/bench-model", max_output_tokens=self.args.tokens)

    def _pids(self, path: str) -> dict[str, int]:
        """The server processes a path goes through, whose CPU time a run records."""
        out: dict[str, int] = {}
        if self.upstream:
            out["upstream"] = self.upstream.pid
        if path.startswith("parley") and self.parley:
            out["parley"] = self.parley.pid
        if path == "parley-rest" and self.envoy and self.envoy.process:
            out["envoy"] = self.envoy.process.pid
        if path == "litellm" and self.litellm:
            out["litellm"] = self.litellm.pid
        return out

    # --- streaming ---------------------------------------------------------------------------------

    def stream_argv(
        self,
        path: str,
        clients: int,
        extra: list[str],
        *,
        sessions: list[str] | None = None,
        upstream_url: str = "",
        model: str = "bench-model",
    ) -> list[str]:
        """The load generator's command for ``clients`` clients on ``path``."""
        argv = [str(LOADGEN), "stream", "-clients", str(clients), "-prompt", PROMPT, "-timeout", "60s"]
        if path == "direct":
            argv += ["-kind", "openai", "-url", upstream_url or self.upstream_url, "-model", model]
            argv += ["-system", SYSTEM]
        elif path == "litellm":
            argv += ["-kind", "openai", "-url", self.litellm_url, "-token", self.litellm_key, "-model", model]
            argv += ["-system", SYSTEM]
        elif path == "parley-grpc":
            argv += ["-kind", "parley-grpc", "-target", self.target, "-token", self.user.token]
        elif path == "parley-rest":
            argv += ["-kind", "parley-rest", "-url", self.rest_url, "-token", self.user.token]
        if sessions:
            argv += ["-sessions", ",".join(sessions)]
        return argv + extra

    def run_stream(self, path: str, argv: list[str], upstream_pid: int | None = None) -> dict[str, Any]:
        """Run the load generator once; add the CPU time each process spent to its report."""
        pids = self._pids(path)
        if upstream_pid is not None:
            pids["upstream"] = upstream_pid
        before = {name: procs.cpu_seconds(pid) for name, pid in pids.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        result: dict[str, Any] = procs.run_json(argv, timeout=self.args.duration + 180)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {name: round(procs.cpu_seconds(pid) - before[name], 3) for name, pid in pids.items()}
        loadgen_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        cpu["loadgen"] = round(loadgen_s, 3)
        proxy = sum(v for k, v in cpu.items() if k in ("parley", "envoy", "litellm"))
        result["path"] = path
        result["cpu_s"] = cpu
        per_1k = round(proxy * 1e6 / result["tokens"], 1) if result["tokens"] and path != "direct" else None
        result["proxy_cpu_ms_per_1k_tokens"] = per_1k
        result["load_1m"] = round(os.getloadavg()[0], 2)
        result["error_samples"] = result.get("error_samples") or []
        return result

    def _sessions_for(self, path: str, agent: str, n: int) -> list[str] | None:
        return self.user.sessions(agent, n) if path.startswith("parley") else None

    def warm_up(self, paths: list[str]) -> None:
        """Two requests per path (connections, caches, LiteLLM's first-call set-up); not recorded."""
        log("warming up every path (not recorded)")
        for path in paths:
            sessions = self._sessions_for(path, self.bench_agent, 2)
            argv = self.stream_argv(path, 2, ["-duration", "1ms", "-per-client", "1"], sessions=sessions)
            result = procs.run_json(argv, timeout=120)
            if result["errors"]:
                raise RuntimeError(f"warm-up of {path} failed: {result['error_samples']}")

    def _load_extra(self) -> list[str]:
        a = self.args
        return ["-duration", f"{a.duration:g}s", "-ramp", f"{a.ramp:g}s", "-max-tokens", str(a.tokens),
                "-expect-tokens", str(a.tokens)]  # fmt: skip

    def phase_stream(self, paths: list[str]) -> None:
        """Every concurrency level, every path; paths alternate within a level so drift hits all."""
        runs: list[dict[str, Any]] = []
        self.results["stream"] = runs
        for clients in self.args.clients:
            for path in paths:
                sessions = self._sessions_for(path, self.bench_agent, clients)
                argv = self.stream_argv(path, clients, self._load_extra(), sessions=sessions)
                self.commands.setdefault(f"stream {path}", redact(argv))
                time.sleep(self.args.pause)
                result = self.run_stream(path, argv)
                runs.append(result)
                log(f"stream {path:11s} x{clients:<3d}: {result['requests']} requests, "
                    f"{result['errors']} errors, TTFT p50 {result['ttft_ms']['p50']:.1f} ms, "
                    f"ITL p99 {result['itl_ms']['p99']:.1f} ms, {result['tokens_per_s']:.0f} tokens/s, "
                    f"CPU s {result['cpu_s']}")  # fmt: skip
        self.results["ratios"] = report.ratios(runs)

    # --- floors ----------------------------------------------------------------------------------

    def phase_floors(self) -> None:
        """CPU per token of a bare grpc.aio streaming server and of the openai SDK client alone."""
        clients = min(50, max(self.args.clients))
        a = self.args
        floors: dict[str, Any] = {"clients": clients}
        self.results["floors"] = floors
        port = procs.free_port()
        floor_argv = [sys.executable, str(ROOT / "bench" / "floors.py"), "grpc-server", f"127.0.0.1:{port}",
                      "--tokens", str(a.tokens), "--tokens-per-second", str(a.rate)]  # fmt: skip
        server = procs.Proc("grpc floor", floor_argv, self.work / "grpc-floor.log")
        try:
            server.wait_ready(lambda: "serving" in server.log_tail(), 60)
            argv = [str(LOADGEN), "stream", "-kind", "parley-grpc", "-target", f"127.0.0.1:{port}",
                    "-token", "none", "-sessions", "sessions/floor", "-clients", str(clients),
                    *self._load_extra()]  # fmt: skip
            self.commands["floor: grpc.aio server"] = redact(argv)
            time.sleep(a.pause)
            before = server.cpu()
            result = procs.run_json(argv, timeout=a.duration + 180)
            cpu = server.cpu() - before
        finally:
            server.stop()
        floors["grpc_server"] = {
            "tokens_per_s": result["tokens_per_s"],
            "errors": result["errors"],
            "cpu_s": round(cpu, 3),
            "cpu_ms_per_1k_tokens": round(cpu * 1e6 / result["tokens"], 1) if result["tokens"] else None,
        }
        argv = [sys.executable, str(ROOT / "bench" / "floors.py"), "sdk-client", self.upstream_url,
                "--clients", str(clients), "--seconds", f"{a.duration:g}",
                "--max-tokens", str(a.tokens)]  # fmt: skip
        self.commands["floor: openai SDK client"] = redact(argv)
        time.sleep(a.pause)
        floors["sdk_client"] = procs.run_json(argv, timeout=a.duration + 180)
        grpc_ms, sdk_ms = (
            floors["grpc_server"]["cpu_ms_per_1k_tokens"],
            floors["sdk_client"]["cpu_ms_per_1k_tokens"],
        )
        log(f"floors at {clients} clients, CPU ms per 1k tokens: grpc.aio {grpc_ms}, openai SDK {sdk_ms}")

    # --- profile -----------------------------------------------------------------------------------

    def phase_profile(self, levels: list[int], reason: str, py_spy: str) -> None:
        """py-spy on the Parley server while ``levels`` gRPC clients stream once more (each level)."""
        seconds = max(3, int(self.args.duration) - 1)
        rate = PROFILE_RATE_HZ
        runs: list[dict[str, Any]] = []
        self.results["profile"] = {
            "reason": reason,
            "note": (
                f"py-spy record, {seconds} s at {rate} Hz (`--nonblocking`), of the Parley server while the "
                "gRPC path streamed again at the given concurrency. Parley serves every RPC on one asyncio "
                "event loop, so that thread is what saturates: its samples are split by area (each sample "
                "goes to the first area found from its innermost frame outwards). grpc.aio's server core is "
                "Cython, invisible to py-spy: its time shows as the asyncio callbacks that run it. Why a "
                f"profile: {reason}."
            ),
            "runs": runs,
        }
        assert self.parley is not None
        for clients in levels:
            raw = self.work / f"profile-parley-{clients}.txt"
            log(f"profiling Parley with py-spy for {seconds} s under {clients} gRPC clients")
            sessions = self._sessions_for("parley-grpc", self.bench_agent, clients)
            argv = self.stream_argv("parley-grpc", clients, self._load_extra(), sessions=sessions)
            spy_argv = [py_spy, "record", "--pid", str(self.parley.pid), "--duration", str(seconds),
                        "--rate", str(rate), "--nonblocking", "--format", "raw",
                        "--output", str(raw)]  # fmt: skip
            self.commands["profile"] = redact(spy_argv)
            spy = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
            load = self.run_stream("parley-grpc", argv)
            _, spy_err = spy.communicate(timeout=120)
            if spy.returncode != 0 or not raw.exists():
                raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy_err.strip()[-1000:]}")
            kept = self.args.out / f"{raw.name}.gz"  # the evidence goes with the results
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_bytes(gzip.compress(raw.read_bytes(), mtime=0))
            summary = summarize_profile(raw.read_text(), seconds, rate)
            summary.update(clients=clients, raw=_display_path(kept))
            summary["load_run"] = {
                k: load[k]
                for k in ("requests", "errors", "tokens_per_s", "ttft_ms", "first_event_ms", "itl_ms")
            }
            runs.append(summary)
            log(f"profile at {clients} clients: event loop busy {summary['loop_busy_pct']} %")

    # --- unary -------------------------------------------------------------------------------------

    def phase_unary(self, have_ghz: bool) -> None:
        """GetAgent at a fixed concurrency: gRPC (ghz, and the load generator) and REST via Envoy."""
        c, d = self.args.unary_concurrency, self.args.unary_duration
        agent = self.user.agent(model="local", display_name="Unary agent")  # any agent: a metadata read
        rows: list[dict[str, Any]] = []
        self.results["unary"] = rows
        self.results["unary_note"] = (
            f"{c} concurrent workers calling GetAgent back to back for {d:g} s after a warm-up. gRPC: one "
            "HTTP/2 connection shared by the workers (ghz's default); REST: one HTTP/1.1 connection per "
            "worker to Envoy, which multiplexes them onto HTTP/2 connections to Parley. "
            f"`{UNARY_FLOOR_PATH}`: the load generator's gRPC run against a bare grpc.aio server "
            "(`bench/floors.py grpc-unary-server`, default options, no interceptor, on uvloop like "
            "Parley) that answers every "
            "GetAgent with the response bytes Parley returned for the same agent: no auth, no database."
        )
        if have_ghz:
            descriptor = ROOT / "gen" / "descriptor" / "parley.binpb"
            argv = [str(GHZ), "--insecure", "--protoset", str(descriptor),
                    "--call", "parley.v1.AgentService/GetAgent", "-d", json.dumps({"name": agent}),
                    "-m", json.dumps({"authorization": f"Bearer {self.user.token}"}),
                    "-c", str(c), "--connections", "1", "--format", "json", self.target]  # fmt: skip
            procs.run_json([*argv, "-z", "1s"], timeout=120)  # warm-up, not recorded
            # Calls still in flight at the end are waited for, not counted as errors.
            argv[-1:-1] = ["-z", f"{d:g}s", "--duration-stop", "wait"]
            self.commands["unary gRPC (ghz)"] = redact(argv)
            time.sleep(self.args.pause)
            rows.append(_ghz_row(procs.run_json(argv, timeout=d + 120), c))
            _log_unary(rows[-1])
        for kind, path in (("grpc", "gRPC"), ("rest", "REST via Envoy")):
            argv = [str(LOADGEN), "unary", "-kind", kind, "-agent", agent, "-token", self.user.token,
                    "-concurrency", str(c), "-duration", f"{d:g}s", "-warmup", "1s"]  # fmt: skip
            argv += (
                ["-target", self.target, "-connections", "1"] if kind == "grpc" else ["-url", self.rest_url]
            )
            self.commands[f"unary {path} (loadgen)"] = redact(argv)
            time.sleep(self.args.pause)
            result = procs.run_json(argv, timeout=d + 120)
            result.update(path=path, client="bench/loadgen", error_samples=result.get("error_samples") or [])
            rows.append(result)
            _log_unary(result)
        rows.append(self._unary_floor(agent))
        _log_unary(rows[-1])

    def _unary_floor(self, agent: str) -> dict[str, Any]:
        """The same loadgen gRPC run against a bare grpc.aio server answering GetAgent with the bytes
        Parley returned for ``agent`` (``floors.py grpc-unary-server``): no auth, no database."""
        from parley_proto.v1 import agent_service_pb2 as agent_pb

        c, d = self.args.unary_concurrency, self.args.unary_duration
        reply = self.user.client.stubs.agents.GetAgent(agent_pb.GetAgentRequest(name=agent), timeout=30)
        response = self.work / "getagent-response.bin"
        response.write_bytes(reply.SerializeToString())
        port = procs.free_port()
        floor_argv = [sys.executable, str(ROOT / "bench" / "floors.py"), "grpc-unary-server",
                      f"127.0.0.1:{port}", "--response", str(response)]  # fmt: skip
        server = procs.Proc("grpc unary floor", floor_argv, self.work / "grpc-unary-floor.log")
        try:
            server.wait_ready(lambda: "serving" in server.log_tail(), 60)
            argv = [str(LOADGEN), "unary", "-kind", "grpc", "-agent", agent, "-token", "none",
                    "-concurrency", str(c), "-duration", f"{d:g}s", "-warmup", "1s",
                    "-target", f"127.0.0.1:{port}", "-connections", "1"]  # fmt: skip
            self.commands["unary gRPC floor: bare grpc.aio server (loadgen)"] = redact(argv)
            time.sleep(self.args.pause)
            result = procs.run_json(argv, timeout=d + 120)
        finally:
            server.stop()
        result.update(path=UNARY_FLOOR_PATH, client="bench/loadgen", response_bytes=response.stat().st_size,
                      error_samples=result.get("error_samples") or [])  # fmt: skip
        return dict(result)

    # --- the real model ----------------------------------------------------------------------------

    def phase_llama(self, paths: list[str]) -> None:
        """The same paths in front of llama.cpp's server engine (scripts/llama_server.py) running
        SmolLM2, one client."""
        from parley.providers.llm.local import default_model_path

        a = self.args
        n = a.llama_requests
        model_path = default_model_path()
        log(f"starting the llama.cpp server with {model_path.name} ({a.llama_threads} thread(s))")
        server, base = procs.start_llama_server(
            self.work, model_path, self.llama_port, threads=a.llama_threads
        )
        self.commands["llama.cpp server"] = redact(server.argv)
        runs: list[dict[str, Any]] = []
        self.results["llama"] = {
            "note": (
                f"llama.cpp's server engine (`scripts/llama_server.py`, xllamacpp; "
                f"{a.llama_threads} thread(s), n_ctx 2048) on this machine, "
                f"model alias `smollm2`; 1 client, {n} requests per path, at most {a.llama_tokens} tokens, "
                "temperature 0, the same system + user messages on every path (Parley: a new session per "
                "request, so no history). A token here is a streamed content event. `proxy CPU` excludes "
                "the model server; llama.cpp reuses the cached prompt prefix between requests on every path."
            ),
            "runs": runs,
        }
        try:
            agent = self.user.agent(model="llamacpp/smollm2", max_output_tokens=a.llama_tokens,
                                    temperature=0.0, display_name="llama.cpp agent")  # fmt: skip
            common = ["-per-client", str(n), "-duration", "600s", "-ramp", "0s", "-count", "events",
                      "-max-tokens", str(a.llama_tokens), "-temperature", "0"]  # fmt: skip
            warm = ["-per-client", "1", "-duration", "60s", "-max-tokens", "8"]
            procs.run_json(
                self.stream_argv("direct", 1, warm, upstream_url=base, model="smollm2"), timeout=300
            )
            for path in paths:
                sessions = self._sessions_for(path, agent, n)
                extra = [*common, "-session-per-request"] if sessions else common
                argv = self.stream_argv(path, 1, extra, sessions=sessions, upstream_url=base, model="smollm2")
                self.commands.setdefault(f"llama {path}", redact(argv))
                time.sleep(a.pause)
                result = self.run_stream(path, argv, upstream_pid=server.pid)
                result["cpu_s"]["llama.cpp server"] = result["cpu_s"].pop("upstream")
                runs.append(result)
                log(
                    f"llama {path:11s}: {result['requests']} requests, {result['errors']} errors, "
                    f"TTFT p50 {result['ttft_ms']['p50']:.1f} ms, ITL p50 {result['itl_ms']['p50']:.1f} ms"
                )
        finally:
            server.stop()

    # --- event-loop health -------------------------------------------------------------------------


# --- helpers -------------------------------------------------------------------------------------


def redact(argv: list[str]) -> str:
    """A command for the record: repo-relative paths, no tokens or keys, no session lists."""
    out = []
    replace = {"-token": "$TOKEN", "-sessions": "<one session per client>"}
    prev = ""
    for arg in argv:
        if prev in replace:
            out.append(replace[prev])
        elif prev == "-m" and "authorization" in arg:
            out.append(shlex.quote('{"authorization": "Bearer $TOKEN"}'))
        else:
            out.append(shlex.quote(arg.replace(str(ROOT) + "/", "")))
        prev = arg
    text = " ".join(out)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:$PORT", text)
    text = re.sub(r"--port \d+", "--port $PORT", text)
    text = re.sub(r"--pid \d+", "--pid $PARLEY_PID", text)
    text = re.sub(r"bench/\.work/\d{8}T\d{6}Z/", "bench/.work/<run>/", text)
    return re.sub(r"sk-bench-[0-9a-f]+", "$LITELLM_MASTER_KEY", text)


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _ghz_row(data: dict[str, Any], concurrency: int) -> dict[str, Any]:
    dist = {round(d["percentage"]): d["latency"] / 1e6 for d in data.get("latencyDistribution") or []}
    codes = data.get("statusCodeDistribution") or {}
    errors = data.get("errorDistribution") or {}
    return {
        "path": "gRPC",
        "client": "ghz",
        "concurrency": concurrency,
        "requests": data["count"],
        "ok": codes.get("OK", 0),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "error_samples": [],
        "duration_s": round(data["total"] / 1e9, 3),
        "rps": round(data["rps"], 1),
        "latency_ms": {
            "mean": round(data["average"] / 1e6, 3),
            "p50": round(dist.get(50, 0.0), 3),
            "p90": round(dist.get(90, 0.0), 3),
            "p99": round(dist.get(99, 0.0), 3),
            "max": round(data["slowest"] / 1e6, 3),
        },
    }


def _log_unary(row: dict[str, Any]) -> None:
    lat = row["latency_ms"]
    log(f"unary {row['path']} ({row['client']}): {row['rps']:.0f} RPS, p50 {lat['p50']:.2f} ms, "
        f"p99 {lat['p99']:.2f} ms, {row['errors']} errors")  # fmt: skip


#: Where a sample of the event-loop thread goes: the first of these found from the leaf frame up
#: (py-spy writes frames as ``function (package/file.py:line)``).
_AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("openai SDK (chunk parsing into pydantic models, SSE)", ("(openai/",)),
    ("HTTP client (httpx, httpcore, h11, anyio)", ("(httpx", "(httpcore", "(h11/", "(anyio/")),
    ("pydantic", ("(pydantic",)),
    ("SQLAlchemy + aiosqlite (on the loop)", ("(sqlalchemy/", "(aiosqlite/")),
    ("grpc.aio Python layer", ("(grpc/", "(grpc_")),
    ("protobuf", ("(google/protobuf/",)),
    ("logging", ("(logging/",)),
    ("Parley's own code", ("(parley/", "(parley_proto/")),
    ("asyncio loop + C callbacks (grpc's Cython core)", ("(asyncio/", "(selectors.py", "(contextlib.py")),
)
#: The event loop's leaf frame while it waits for I/O.
_LOOP_IDLE = ("EpollSelector.select (selectors.py:", "BaseSelectorEventLoop.select")
#: Frames where a worker thread waits rather than works (py-spy does not always see that).
_WAITING = ("_connection_worker_thread (aiosqlite/core.py:59)", "(threading.py:", "(queue.py:")


def summarize_profile(raw: str, seconds: float, rate: int) -> dict[str, Any]:
    """Summarize py-spy's raw (collapsed) output: ``frame;frame;... count`` per line, root first.

    The event loop is the one thread that serves every RPC, so it is what saturates: its samples
    are attributed to the areas of ``_AREAS`` (exclusive, summing to 100 %), and its busiest
    functions are listed. Returns the sample counts, the event loop's busy share of the
    ``seconds`` x ``rate`` samples possible, the areas and the top 15 functions (self samples).
    """
    total = loop_total = 0
    areas: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("Thread._bootstrap"):  # a worker thread (aiosqlite, llama, executor)
            if not frames[-1].startswith(_WAITING) and not any(w in frames[-1] for w in _WAITING[1:]):
                workers[_short(frames[-1])] += count
            continue
        if frames[-1].startswith(_LOOP_IDLE):
            continue  # the loop waiting for I/O: idle, though py-spy's --nonblocking counts it
        total += count
        loop_total += count
        area = next(
            (a for f in reversed(frames) for a, needles in _AREAS if any(n in f for n in needles)), "other"
        )
        areas[area] += count
        leaves[_short(frames[-1])] += count

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "loop_busy_pct": round(100 * loop_total / (seconds * rate), 1),
        "areas": [(a, pct(c)) for a, c in areas.most_common()],
        "top_self": [(f, pct(c)) for f, c in leaves.most_common(15)],
        "worker_threads_busy_samples": sum(workers.values()),
        "worker_top": [(f, c) for f, c in workers.most_common(5)],
    }


def _short(frame: str) -> str:
    return re.sub(r"\((?:[^()]*/(?:site-packages|server|lib/python3\.\d+)/)?([^()]+)\)$", r"(\1)", frame)
