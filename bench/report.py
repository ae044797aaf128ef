"""Results of a benchmark run as JSON (everything) and Markdown (the tables people read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import targets

__all__ = [
    "LOOP_COLUMNS",
    "MEMORY_COLUMNS",
    "RATIO_COLUMNS",
    "REPLICA_COLUMNS",
    "STREAM_COLUMNS",
    "UNARY_COLUMNS",
    "markdown",
    "ratios",
    "replica_limits",
    "replica_ratios",
    "write",
]

#: Columns of the streaming table (tests/bench/test_bench_smoke.py checks them).
STREAM_COLUMNS = (
    "clients",
    "path",
    "requests",
    "errors",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p99 ms",
    "tokens/s",
    "proxy CPU ms / 1k tokens",
)
RATIO_COLUMNS = (
    "clients",
    "ratio",
    "TTFT p50",
    "TTFT p99",
    "ITL p99",
    "tokens/s",
    "added TTFT p50 ms",
    "proxy CPU / 1k tokens",
)
LOOP_COLUMNS = (
    "phase",
    "duration s",
    "loop lag max ms",
    "stall ≤ 25 ms",  # the loop's target_ms (see _loop_columns)
    "pings",
    "ping p50 ms",
    "ping p99 ms",
    "ping max ms",
    "control p99 ms",
    "control max ms",
)
MEMORY_COLUMNS = ("replies", "VmRSS MiB", "RssAnon MiB", "RssFile MiB", "VmHWM MiB", "model processes MiB",
                  "errors", "reply p50 ms")  # fmt: skip
UNARY_COLUMNS = ("path", "client", "concurrency", "requests", "errors", "RPS", "p50 ms", "p99 ms")
REPLICA_COLUMNS = (
    "clients",
    "path",
    "replicas",
    "requests",
    "errors",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p99 ms",
    "tokens/s",
    "split",
)
#: Processes of the replicas phase's CPU table: (key in ``cpu_pct_of_core``, column).
REPLICA_CPU = (
    ("replica 1", "replica 1"),
    ("replica 2", "replica 2"),
    ("envoy", "Envoy"),
    ("upstream", "upstream"),
    ("redis", "Redis"),
    ("postgres", "PostgreSQL"),
    ("loadgen", "loadgen"),
    ("machine", "machine (all)"),
    ("unmeasured", "unmeasured"),
)
#: Above this share of all cores busy, the machine counts as saturated (replica_limits).
MACHINE_SATURATED = 0.9
#: Above this share of one core, a replica (one event loop) counts as saturated.
REPLICA_SATURATED = 0.85

#: (numerator path, denominator path) pairs of the ratio table.
RATIO_PAIRS = (
    ("parley-grpc", "direct"),
    ("parley-rest", "direct"),
    ("litellm", "direct"),
    ("parley-grpc", "litellm"),
    ("parley-rest", "litellm"),
)


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency level, Parley/bare, LiteLLM/bare and Parley/LiteLLM of the main metrics.

    A ratio above 1 means slower (or more CPU) for latencies and CPU, and faster for tokens/s.
    """
    by_level: dict[int, dict[str, dict[str, Any]]] = {}
    for run in stream:
        by_level.setdefault(run["clients"], {})[run["path"]] = run
    out = []
    for clients, runs in sorted(by_level.items()):
        for num, den in RATIO_PAIRS:
            a, b = runs.get(num), runs.get(den)
            if a is None or b is None:
                continue
            out.append(
                {
                    "clients": clients,
                    "ratio": f"{num}/{den}",
                    "ttft_p50": _div(a["ttft_ms"]["p50"], b["ttft_ms"]["p50"]),
                    "ttft_p99": _div(a["ttft_ms"]["p99"], b["ttft_ms"]["p99"]),
                    "itl_p50": _div(a["itl_ms"]["p50"], b["itl_ms"]["p50"]),
                    "itl_p99": _div(a["itl_ms"]["p99"], b["itl_ms"]["p99"]),
                    "tokens_per_s": _div(a["tokens_per_s"], b["tokens_per_s"]),
                    "added_ttft_p50_ms": round(a["ttft_ms"]["p50"] - b["ttft_ms"]["p50"], 1),
                    "proxy_cpu_per_1k_tokens": _div(
                        a.get("proxy_cpu_ms_per_1k_tokens"), b.get("proxy_cpu_ms_per_1k_tokens")
                    ),
                }
            )
    return out


def replica_ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level and path of the replicas phase, the most replicas over the fewest (2/1): tokens/s
    (above 1: more delivered), TTFT p50/p99 and ITL p99 (below 1: faster), and both error counts."""
    by: dict[tuple[int, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        by.setdefault((run["clients"], run["path"]), {})[run["replicas"]] = run
    out = []
    for (clients, path), counts in by.items():
        if len(counts) < 2:
            continue
        lo, hi = counts[min(counts)], counts[max(counts)]
        out.append(
            {
                "clients": clients,
                "path": path,
                "ratio": f"{hi['replicas']}/{lo['replicas']}",
                "tokens_per_s": _div(hi["tokens_per_s"], lo["tokens_per_s"]),
                "ttft_p50": _div(hi["ttft_ms"]["p50"], lo["ttft_ms"]["p50"]),
                "ttft_p99": _div(hi["ttft_ms"]["p99"], lo["ttft_ms"]["p99"]),
                "itl_p99": _div(hi["itl_ms"]["p99"], lo["itl_ms"]["p99"]),
                "errors": [lo["errors"], hi["errors"]],
            }
        )
    return out


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0f} %"


def replica_limits(rep: dict[str, Any]) -> str:
    """A paragraph on what limits scaling from 1 to 2 replicas on this machine, from the CPU each
    process used at the largest level (``rep`` is ``results["replicas"]``); empty without runs.

    Per path: the machine counts as saturated when all cores are at least ``MACHINE_SATURATED``
    busy in the 2-replica run; else one replica's event loop is the limit when it used at least
    ``REPLICA_SATURATED`` of a core in the 1-replica run; else neither.
    """
    runs = rep.get("runs") or []
    if not runs:
        return ""
    counts = rep.get("counts") or [1, 2]
    lo, hi = counts[0], counts[-1]
    cores = rep.get("cores") or 1
    top = max(r["clients"] for r in runs)
    by = {(r["path"], r["replicas"]): r for r in runs if r["clients"] == top}
    ratio_of = {r["path"]: r for r in replica_ratios(runs) if r["clients"] == top}
    rate = rep.get("tokens_per_second")
    ceiling = f" (at most {top} x {rate:g} = {top * rate:.0f} tokens/s if nothing waited)" if rate else ""
    text = [
        f"**What limits scaling here.** Everything in this phase shares this machine's {cores} cores "
        f"({cores * 100} % of one core in all): the load generator, Envoy, the upstream, Redis, "
        "PostgreSQL and the replicas; and a replica serves its RPCs on one asyncio event loop, so about "
        f"one core at most. At {top} clients{ceiling}:"
    ]
    saturated = False
    clauses: list[str] = []
    for path in rep.get("paths") or []:
        one, two = by.get((path, lo)), by.get((path, hi))
        if one is None or two is None:
            continue
        p1, p2 = one["cpu_pct_of_core"], two["cpu_pct_of_core"]
        replicas = " + ".join(_pct(p2.get(f"replica {i}")) for i in range(1, hi + 1))
        ratio = ratio_of.get(path, {})
        tokens, ttft = ratio.get("tokens_per_s"), ratio.get("ttft_p50")
        if (p2.get("machine") or 0) >= MACHINE_SATURATED * cores * 100:
            saturated = True
            verdict = "the cores are the limit"
        elif (p1.get("replica 1") or 0) >= REPLICA_SATURATED * 100:
            verdict = "one replica's event loop was the limit, and cores were left for a second"
        else:
            verdict = "neither one replica nor the machine was saturated"
        clauses.append(
            f"on `{path}`, one replica used {_pct(p1.get('replica 1'))} of a core, the machine "
            f"{_pct(p1.get('machine'))}; with {hi}, the replicas used {replicas}, Envoy "
            f"{_pct(p2.get('envoy'))}, the upstream {_pct(p2.get('upstream'))}, the load generator "
            f"{_pct(p2.get('loadgen'))}, Redis {_pct(p2.get('redis'))}, PostgreSQL "
            f"{_pct(p2.get('postgres'))}, the machine {_pct(p2.get('machine'))} "
            f"({_pct(p2.get('unmeasured'))} outside these processes), for "
            f"x{_fmt(tokens, 2)} the tokens/s and x{_fmt(ttft, 2)} the TTFT p50 of one replica: "
            f"{verdict}"
        )
    if not clauses:
        return ""
    text.append("; ".join(clauses) + ".")
    if saturated:
        text.append(
            f"Where the machine is saturated, the {hi}-vs-{lo} ratio measures these {cores} cores, not "
            "Parley: a second replica only gets CPU that Envoy, the upstream and the load generator need "
            "as well. With cores to spare (or replicas on machines of their own), what a second replica "
            "relieves is the first one's event loop."
        )
    unmeasured = max((r["cpu_pct_of_core"].get("unmeasured") or 0) for r in by.values())
    if unmeasured >= 20:
        text.append(
            f"Up to {unmeasured:.0f} % of a core went to processes outside this phase's stack during its "
            "runs (other work on the machine, or the idle servers of the other phases): rerun on an idle "
            "machine before reading much into the ratios."
        )
    return " ".join(text)


def _replica_section(rep: dict[str, Any]) -> list[str]:
    runs = rep["runs"]
    counts = rep.get("counts") or [1, 2]
    lo, hi = counts[0], counts[-1]
    rows = [
        [
            r["clients"],
            r["path"],
            r["replicas"],
            r["requests"],
            r["errors"],
            _f(r["ttft_ms"]["p50"]),
            _f(r["ttft_ms"]["p99"]),
            _f(r["itl_ms"]["p99"]),
            _f(r["tokens_per_s"]),
            " / ".join(str(v) for v in r.get("requests_per_replica") or []) or "-",
        ]
        for r in runs
    ]
    ratio_rows = [
        [
            r["clients"],
            r["path"],
            _fmt(r["tokens_per_s"], 3),
            _fmt(r["ttft_p50"], 2),
            _fmt(r["ttft_p99"], 2),
            _fmt(r["itl_p99"], 2),
            f"{r['errors'][0]} / {r['errors'][1]}",
        ]
        for r in rep.get("ratios") or replica_ratios(runs)
    ]
    cpu_rows = [
        [
            r["clients"],
            r["path"],
            r["replicas"],
            *[_fmt(r["cpu_pct_of_core"].get(k), 0) for k, _ in REPLICA_CPU],
        ]
        for r in runs
    ]
    cores = rep.get("cores") or 1
    lines = [
        f"## Replicas: {lo} vs {hi} behind one Envoy (Redis, PostgreSQL)",
        "",
        rep["note"],
        "",
        *_table(REPLICA_COLUMNS, rows),
        "",
        f"### Ratios {hi} replicas / {lo} (same run)",
        "",
        "A tokens/s ratio above 1 means the replicas delivered more together; TTFT and ITL ratios below 1 "
        "mean faster. `errors` are the counts of both runs.",
        "",
        *_table(
            ("clients", "path", "tokens/s", "TTFT p50", "TTFT p99", "ITL p99", f"errors {lo} / {hi}"),
            ratio_rows,
        ),
        "",
        "### CPU per process during each run (% of one core)",
        "",
        f"CPU time over the run's wall time: 100 is one core, {cores * 100} all of them. `replica 2` is idle "
        f"in the {lo}-replica runs; `machine (all)` is the busy time of all cores (`/proc/stat`), "
        "`unmeasured` what of it the listed processes do not account for (the other Envoy, the benchmark "
        "itself, the idle servers of the other phases, anything else running). The kernel counts a "
        "process's time precisely and a core's by ticks, so `unmeasured` is only good to some 10 % of a "
        "core either way (a small negative value is that).",
        "",
        *_table(("clients", "path", "replicas", *[c for _, c in REPLICA_CPU]), cpu_rows),
        "",
    ]
    limits = replica_limits(rep)
    return lines + ([limits, ""] if limits else [])


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(columns: tuple[str, ...] | list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return lines


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _floor_section(results: dict[str, Any]) -> list[str]:
    floors = results["floors"]
    clients = floors["clients"]
    runs = {r["path"]: r for r in results.get("stream", []) if r["clients"] == clients}
    grpc_floor = floors.get("grpc_server", {}).get("cpu_ms_per_1k_tokens")
    sdk_floor = floors.get("sdk_client", {}).get("cpu_ms_per_1k_tokens")
    rows: list[list[Any]] = []
    for path, label in (
        ("parley-grpc", "Parley, gRPC path (the Parley process)"),
        ("parley-rest", "Parley, REST path (Parley + Envoy)"),
        ("litellm", "LiteLLM proxy"),
    ):
        if path in runs:
            rows.append(
                [label, _f(runs[path].get("proxy_cpu_ms_per_1k_tokens")), _f(runs[path]["tokens_per_s"])]
            )
    rows.append(["bare grpc.aio server streaming the same events", _f(grpc_floor),
                 _f(floors.get("grpc_server", {}).get("tokens_per_s"))])  # fmt: skip
    rows.append(["openai SDK streaming client alone (AsyncOpenAI)", _f(sdk_floor),
                 _f(floors.get("sdk_client", {}).get("tokens_per_s"))])  # fmt: skip
    parley = runs.get("parley-grpc", {}).get("proxy_cpu_ms_per_1k_tokens")
    if parley is not None and grpc_floor is not None and sdk_floor is not None:
        rows.append(
            ["Parley's own layers (Parley gRPC minus both floors)", parley - grpc_floor - sdk_floor, None]
        )
    return [
        f"### Where a token's CPU goes ({clients} clients)",
        "",
        "CPU time per 1000 tokens delivered. The two floors are the libraries on Parley's token path run "
        "alone (`bench/floors.py`): a grpc.aio server streaming the same ChatEvents with no auth, database "
        "or model call, and the openai SDK's streaming client reading the same upstream, each on uvloop "
        "like Parley.",
        "",
        *_table(("process", "CPU ms / 1k tokens", "tokens/s"), rows),
        "",
    ]


def _profile_tables(runs: list[dict[str, Any]]) -> list[str]:
    levels = [f"{r['clients']} clients" for r in runs]
    areas = list(dict.fromkeys(a for r in runs for a, _ in r["areas"]))
    shares = [dict(r["areas"]) for r in runs]
    lines = [
        "Event-loop samples by area (%):",
        "",
        *_table(
            ["area", *levels],
            [[a, *[_fmt(s.get(a), 1) for s in shares]] for a in areas]
            + [["**event loop busy** (% of the time)", *[_fmt(r["loop_busy_pct"], 1) for r in runs]]]
            + [["tokens/s delivered meanwhile", *[_fmt(r["load_run"]["tokens_per_s"], 0) for r in runs]]],
        ),
        "",
    ]
    for r in runs:
        lines += [
            f"Busiest event-loop functions at {r['clients']} clients (self samples, %; raw stacks in "
            f"`{r['raw']}`):",
            "",
            *_table(("function", "% self"), [[f"`{f}`", _fmt(p, 1)] for f, p in r["top_self"][:10]]),
            "",
        ]
    return lines


def _loop_columns(loop: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f"stall ≤ {loop['target_ms']:g} ms" if c.startswith("stall ≤") else c for c in LOOP_COLUMNS)


def _loop_rows(loop: dict[str, Any]) -> list[list[Any]]:
    """A row per step; ``stall ≤ target`` holds when the loop's largest lag plus one measuring
    interval (the longest stall that lag allows) is at most the target."""
    target, interval = loop["target_ms"], loop.get("lag_interval_ms", 0.0)
    rows = []
    for p in loop["phases"]:
        control = p.get("control") or {}
        lag = p.get("loop_lag_max_ms")
        below = "not covered" if lag is None else "yes" if lag + interval <= target else "**no**"
        rows.append(
            [p["phase"], p["duration_s"], _f(lag), below, p["pings"], _f(p.get("p50_ms")),
             _f(p.get("p99_ms")), _f(p.get("max_ms")), _f(control.get("p99_ms")), _f(control.get("max_ms"))]
        )  # fmt: skip
    return rows


def _stream_rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r["clients"],
            r["path"],
            r["requests"],
            r["errors"],
            _f(r["ttft_ms"]["p50"]),
            _f(r["ttft_ms"]["p99"]),
            _f(r["itl_ms"]["p50"]),
            _f(r["itl_ms"]["p99"]),
            _f(r["tokens_per_s"]),
            _f(r.get("proxy_cpu_ms_per_1k_tokens")),
        ]
        for r in runs
    ]


def _targets_section(rows: list[dict[str, Any]]) -> list[str]:
    passed = sum(1 for r in rows if r["pass"])
    failed = sum(1 for r in rows if r["pass"] is False)
    return [
        "## Targets",
        "",
        'Issue "Performance": each target is a ratio of two figures measured in this run on this '
        f"machine, with its threshold. {passed} PASS, {failed} FAIL, {len(rows) - passed - failed} not "
        "measured (phase or path not run). The figures are in the sections below; the definitions in "
        "`bench/targets.py`.",
        "",
        *_table(targets.COLUMNS, [[*targets.cells(r)[:-1], f"**{r['result']}**"] for r in rows]),
        "",
    ]


def _memory_section(mem: dict[str, Any]) -> list[str]:
    rows = [
        [
            s["replies"],
            _f(s.get("VmRSS")),
            _f(s.get("RssAnon")),
            _f(s.get("RssFile")),
            _f(s.get("VmHWM")),
            _f(s.get("models")),
            s.get("errors", "-"),
            _f(s.get("reply_ms_p50")),
        ]
        for s in mem["samples"]
    ]
    lines = ["## Memory: resident set of the embedded default over replies", "", mem["note"], ""]
    lines += [*_table(MEMORY_COLUMNS, rows), ""]
    if mem.get("growth_mib") is not None:
        n = mem["replies"]
        lines += [
            f"Growth from reply {n // 2} to {n}: {mem['growth_mib']:+.1f} MiB VmRSS "
            f"({mem['anon_growth_mib']:+.1f} MiB RssAnon); bound {mem['bound_mib']:g} MiB. "
            f"{n} replies took {mem['elapsed_s']:.0f} s.",
            "",
        ]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The human-readable report of ``results`` (the JSON document)."""
    cfg = results["config"]
    machine = results["machine"]
    versions = results["versions"]
    load = results["load"]
    md = [
        "# Parley overhead benchmark",
        "",
        f"Run {results['started']} ({results['elapsed_s']:.0f} s) with `{results['command']}`.",
        "",
        *(_targets_section(results["targets"]) if results.get("targets") else []),
        "## Set-up",
        "",
        f"- **Machine**: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['os']} (kernel {machine['kernel']}"
        + {True: ", scheduler autogroup on", False: ", scheduler autogroup off"}.get(
            machine.get("sched_autogroup"), ""
        )
        + ").",
        f"- **Load** (1-min average from `uptime`): {load['before'][0]:.2f} before the run, "
        f"{load['after'][0]:.2f} after"
        + (
            " (at the start of each phase, the benchmark's own load included: "
            + ", ".join(f"{k} {v:.2f}" for k, v in load["phases"].items())
            + ")"
            if load.get("phases")
            else ""
        )
        + "; the servers and the load generator share these cores.",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"- **Upstream**: `bench/upstream.py`, {cfg['tokens']} tokens per reply at "
        f"{cfg['tokens_per_second']:g} tokens/s per stream (first token after one interval); "
        f"same prompt on every path (system: the agent's instructions; user: {cfg['prompt']!r}).",
        f"- **Load generator**: `bench/loadgen` (Go); each of N clients sends one request after the other "
        f"for {cfg['duration_s']:g} s (starts spread over {cfg['ramp_s']:g} s), one connection per client.",
        f"- **Parley**: {cfg['parley']}",
        f"- **LiteLLM**: {cfg['litellm']}",
        "",
    ]
    if results.get("stream"):
        md += [
            "## Streaming: time to first token (TTFT), inter-token latency (ITL), throughput",
            "",
            "Paths: `direct` = the upstream itself over HTTP/SSE; `parley-grpc` = Parley SendMessage over "
            "gRPC; `parley-rest` = Parley through Envoy's REST/SSE transcoding; `litellm` = LiteLLM proxy. "
            "`tokens/s` is delivered to all clients together; `proxy CPU` is the CPU time the proxy "
            "processes (Parley, Parley + Envoy, LiteLLM) spent per 1000 tokens delivered.",
            "",
            *_table(STREAM_COLUMNS, _stream_rows(results["stream"])),
            "",
        ]
    if results.get("ratios"):
        md += [
            "### Ratios (same run)",
            "",
            "Latency and CPU ratios above 1 mean the first path is slower or costlier; a tokens/s ratio "
            "below 1 means it delivered less. (ITL p50 is left out: a saturated proxy sends tokens in "
            "bursts, which lowers its ITL p50; it is in results.json.)",
            "",
            *_table(
                RATIO_COLUMNS,
                [
                    [
                        r["clients"],
                        r["ratio"],
                        _fmt(r["ttft_p50"], 2),
                        _fmt(r["ttft_p99"], 2),
                        _fmt(r["itl_p99"], 2),
                        _fmt(r["tokens_per_s"], 3),
                        r["added_ttft_p50_ms"],
                        _fmt(r["proxy_cpu_per_1k_tokens"], 2),
                    ]
                    for r in results["ratios"]
                ],
            ),
            "",
        ]
    if results.get("floors"):
        md += _floor_section(results)
    llama = results.get("llama")
    if llama and llama.get("runs"):
        md += [
            "## Real model: llama.cpp server (SmolLM2-135M-Instruct)",
            "",
            llama["note"],
            "",
            *_table(STREAM_COLUMNS, _stream_rows(llama["runs"])),
            "",
        ]
    if results.get("unary"):
        md += [
            "## Unary: GetAgent with a bearer token",
            "",
            results["unary_note"],
            "",
            *_table(
                UNARY_COLUMNS,
                [
                    [
                        u["path"],
                        u["client"],
                        u["concurrency"],
                        u["requests"],
                        u["errors"],
                        u["rps"],
                        u["latency_ms"]["p50"],
                        u["latency_ms"]["p99"],
                    ]
                    for u in results["unary"]
                ],
            ),
            "",
        ]
    replicas = results.get("replicas")
    if replicas and replicas.get("runs"):
        md += _replica_section(replicas)
    loop = results.get("loop")
    if loop and loop.get("phases"):
        md += [
            "## Event-loop health: longest stall while the local model, speech and streams run",
            "",
            loop["note"],
            "",
            *_table(_loop_columns(loop), _loop_rows(loop)),
            "",
        ]
    mem = results.get("memory")
    if mem and mem.get("samples"):
        md += _memory_section(mem)
    tele = results.get("telemetry")
    if tele and tele.get("runs"):
        import telemetry  # here: it imports phases, which imports this module

        md += telemetry.markdown_section(tele)
    conv = results.get("converse")
    if conv and conv.get("turns"):
        import converse  # here: it imports phases, which imports this module

        md += converse.markdown_section(conv)
    profile = results.get("profile")
    if profile and profile.get("runs"):
        md += ["## Profile of the Parley server under streaming load", "", profile["note"], ""]
        md += _profile_tables(profile["runs"])
    if results.get("phase_errors"):
        md += ["## Phases that failed", ""] + [f"- {e}" for e in results["phase_errors"]] + [""]
    md += ["## Commands", ""] + [f"- {k}: `{v}`" for k, v in results["commands"].items()] + [""]
    return "\n".join(md)


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    md_path = out_dir / "results.md"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path
