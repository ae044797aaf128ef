"""The performance targets (issue "Performance"), checked against one run's results.

Each target is a ratio of two figures measured in the same run on the same machine, with a
threshold on that ratio; ``evaluate(results)`` returns one row per target for results.json's
``targets``, the Targets table at the top of results.md, and the table ``bench/run.py`` prints at
the end. A target whose figures the run did not measure (its phase or path left out, LiteLLM not
installed) is ``not measured``, neither PASS nor FAIL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["COLUMNS", "evaluate", "result_text", "text_table"]

COLUMNS = ("target", "measured", "threshold", "ratio", "result")
#: Parley's TTFT added over the bare upstream, at most this share of LiteLLM's (1 client, p50).
TTFT_SHARE = 0.5
#: Parley's process CPU per 1000 tokens, at most this share of LiteLLM's (50 clients).
CPU_SHARE = 0.5
CPU_CLIENTS = 50
#: Parley's tokens/s at saturation (the highest level run), at least this many times LiteLLM's.
THROUGHPUT_TIMES = 2.0
#: GetAgent over gRPC, at least this share of a bare grpc.aio unary server's requests/s.
UNARY_FLOOR_SHARE = 0.5
#: GetAgent over REST through Envoy, at least this share of gRPC's requests/s.
REST_SHARE = 0.8
#: The event loop's longest stall while the local model, speech and the streams run (ms).
LOOP_MAX_MS = 25.0
#: Live voice: the English turns' median voice-to-voice latency, below this (s; issue 18).
VOICE_MAX_S = 1.5


def result_text(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "not measured"}[passed]


def _row(
    key: str, target: str, measured: str, threshold: str, ratio: float | None, passed: bool | None
) -> dict[str, Any]:
    return {
        "id": key,
        "target": target,
        "measured": measured,
        "threshold": threshold,
        "ratio": None if ratio is None else round(ratio, 3),
        "pass": passed,
        "result": result_text(passed),
    }


def _missing(key: str, target: str, threshold: str, why: str) -> dict[str, Any]:
    return _row(key, target, f"not measured: {why}", threshold, None, None)


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _errors(*runs: dict[str, Any]) -> str:
    bad = [f"{r['path']} {r['errors']}" for r in runs if r.get("errors")]
    return f"; errors: {', '.join(bad)}" if bad else ""


def _stream_runs(results: dict[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
    return {(r["clients"], r["path"]): r for r in results.get("stream") or []}


def _ttft(results: dict[str, Any], path: str, label: str) -> dict[str, Any]:
    key = f"ttft-{path.removeprefix('parley-')}"
    target = f"TTFT added over `direct`, {label}, 1 client (p50): Parley ≤ ½ LiteLLM's"
    threshold = f"≤ {TTFT_SHARE:g}"
    runs = _stream_runs(results)
    direct, parley, litellm = runs.get((1, "direct")), runs.get((1, path)), runs.get((1, "litellm"))
    if direct is None or parley is None or litellm is None:
        missing = [n for n, r in (("direct", direct), (path, parley), ("litellm", litellm)) if r is None]
        return _missing(key, target, threshold, f"no 1-client stream run of {', '.join(missing)}")
    base = direct["ttft_ms"]["p50"]
    added = parley["ttft_ms"]["p50"] - base
    litellm_added = litellm["ttft_ms"]["p50"] - base
    measured = (
        f"Parley +{added:.1f} ms, LiteLLM +{litellm_added:.1f} ms over direct's {base:.1f} ms"
        + _errors(direct, parley, litellm)
    )
    # Decided on the figures themselves, so that a LiteLLM adding nothing (or less than nothing,
    # to the noise) still gives an answer where the ratio has none.
    passed = added <= TTFT_SHARE * litellm_added
    return _row(key, target, measured, threshold, _div(added, litellm_added) if litellm_added > 0 else None,
                passed)  # fmt: skip


def _cpu(results: dict[str, Any]) -> dict[str, Any]:
    c = CPU_CLIENTS
    target = f"Parley process CPU per 1k tokens, {c} clients (gRPC path): ≤ ½ LiteLLM's"
    threshold = f"≤ {CPU_SHARE:g}"
    runs = _stream_runs(results)
    parley, litellm = runs.get((c, "parley-grpc")), runs.get((c, "litellm"))
    if parley is None or litellm is None:
        missing = [n for n, r in (("parley-grpc", parley), ("litellm", litellm)) if r is None]
        return _missing("cpu", target, threshold, f"no {c}-client stream run of {', '.join(missing)}")
    a, b = parley.get("proxy_cpu_ms_per_1k_tokens"), litellm.get("proxy_cpu_ms_per_1k_tokens")
    ratio = _div(a, b)
    measured = f"Parley {a} ms, LiteLLM {b} ms of CPU per 1k tokens" + _errors(parley, litellm)
    return _row("cpu", target, measured, threshold, ratio, None if ratio is None else ratio <= CPU_SHARE)


def _throughput(results: dict[str, Any]) -> dict[str, Any]:
    target = "Tokens/s at saturation (the highest client count run, gRPC path): ≥ 2 x LiteLLM's"
    threshold = f"≥ {THROUGHPUT_TIMES:g}"
    runs = _stream_runs(results)
    levels = [c for c, p in runs if p == "parley-grpc" and (c, "litellm") in runs]
    if not levels:
        return _missing("throughput", target, threshold, "no level with both parley-grpc and litellm")
    c = max(levels)
    parley, litellm, direct = runs[(c, "parley-grpc")], runs[(c, "litellm")], runs.get((c, "direct"))
    ratio = _div(parley["tokens_per_s"], litellm["tokens_per_s"])
    measured = (
        f"at {c} clients: Parley {parley['tokens_per_s']:.0f}, LiteLLM {litellm['tokens_per_s']:.0f}"
        + (f", direct {direct['tokens_per_s']:.0f}" if direct else "")
        + " tokens/s"
        + _errors(parley, litellm)
    )
    return _row("throughput", target, measured, threshold, ratio,
                None if ratio is None else ratio >= THROUGHPUT_TIMES)  # fmt: skip


def _unary_rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The load generator's unary rows by path (the gRPC one of ghz is left out: one client for all)."""
    return {u["path"]: u for u in results.get("unary") or [] if u.get("client") == "bench/loadgen"}


def _unary_text(row: dict[str, Any]) -> str:
    return f"{row['rps']:.0f} req/s (p99 {row['latency_ms']['p99']:.1f} ms)"


def _unary_floor(results: dict[str, Any]) -> dict[str, Any]:
    target = "Authenticated GetAgent over gRPC: ≥ 0.5 x a bare grpc.aio unary server's requests/s"
    threshold = f"≥ {UNARY_FLOOR_SHARE:g}"
    rows = _unary_rows(results)
    grpc = rows.get("gRPC")
    floor = next((r for p, r in rows.items() if "floor" in p), None)
    if grpc is None or floor is None:
        return _missing("unary-floor", target, threshold, "no unary phase (or no floor run)")
    ratio = _div(grpc["rps"], floor["rps"])
    measured = f"Parley {_unary_text(grpc)}, floor {_unary_text(floor)}" + _errors(grpc, floor)
    return _row("unary-floor", target, measured, threshold, ratio,
                None if ratio is None else ratio >= UNARY_FLOOR_SHARE)  # fmt: skip


def _unary_rest(results: dict[str, Any]) -> dict[str, Any]:
    target = "GetAgent over REST through Envoy: ≥ 0.8 x gRPC's requests/s"
    threshold = f"≥ {REST_SHARE:g}"
    rows = _unary_rows(results)
    grpc, rest = rows.get("gRPC"), rows.get("REST via Envoy")
    if grpc is None or rest is None:
        return _missing("unary-rest", target, threshold, "no unary phase")
    ratio = _div(rest["rps"], grpc["rps"])
    measured = f"REST {_unary_text(rest)}, gRPC {_unary_text(grpc)}" + _errors(rest, grpc)
    return _row("unary-rest", target, measured, threshold, ratio,
                None if ratio is None else ratio >= REST_SHARE)  # fmt: skip


def _loop(results: dict[str, Any]) -> dict[str, Any]:
    loop = results.get("loop") or {}
    limit = LOOP_MAX_MS
    streams = loop.get("streams") or 50
    target = f"Event loop never blocked > {limit:g} ms while the local model, speech, {streams} streams run"
    threshold = f"≤ 1 (longest stall ≤ {limit:g} ms)"
    row = next((p for p in loop.get("phases") or [] if p.get("all_at_once")), None)
    if row is None:
        return _missing("loop", target, threshold, "no loop phase with streams (--loop-streams)")
    lag = row.get("loop_lag_max_ms")
    if lag is None:
        return _missing("loop", target, threshold, "the event-loop lag scrapes do not cover the step")
    interval = loop.get("lag_interval_ms", 0.0)
    control = row.get("control") or {}
    streams_run = (row.get("outcome") or {}).get("streams") or {}
    measured = (
        f"event-loop lag max {lag:.1f} ms, measured every {interval:g} ms (so no stall over "
        f"{lag + interval:.1f} ms) in {row['duration_s']:g} s; "
        f"health pings: max {row.get('max_ms', 0):.1f} ms "
        f"(p99 {row.get('p99_ms', 0):.1f}), idle control's max {control.get('max_ms', 0):.1f} ms"
        + (f"; streams: {streams_run['tokens_per_s']:.0f} tokens/s" if streams_run else "")
        + (f", {streams_run['errors']} errors" if streams_run.get("errors") else "")
    )
    ratio = (lag + interval) / limit
    return _row("loop", target, measured, threshold, ratio, ratio <= 1)


def _memory(results: dict[str, Any]) -> dict[str, Any]:
    mem = results.get("memory") or {}
    bound = mem.get("bound_mib", 5.0)
    n = mem.get("replies", 1000)
    target = (
        f"Memory of the embedded default (SQLite, local model): RSS after start-up and after {n} "
        f"replies; growth from reply {n // 2} to {n} ≤ {bound:g} MiB"
    )
    threshold = f"≤ 1 (growth ≤ {bound:g} MiB)"
    if mem.get("growth_mib") is None:
        return _missing("memory", target, threshold, "no memory phase")
    measured = (
        f"VmRSS {mem['rss_start_mib']:.1f} MiB after start-up"
        + (f" (model processes {mem['models_start_mib']:.1f} more)" if mem.get("models_start_mib") else "")
        + f", {mem['rss_half_mib']:.1f} after {n // 2} "
        f"replies, {mem['rss_end_mib']:.1f} after {n}: {mem['growth_mib']:+.1f} MiB "
        f"(heap, RssAnon: {mem['anon_growth_mib']:+.1f} MiB)"
        + (f"; {mem['errors']} failed replies" if mem.get("errors") else "")
    )
    ratio = mem["growth_mib"] / bound
    return _row("memory", target, measured, threshold, ratio, ratio <= 1)


def _voice(results: dict[str, Any]) -> dict[str, Any]:
    conv = results.get("converse") or {}
    limit_s = conv.get("target_s", VOICE_MAX_S)
    target = (
        f"Live voice (issue 18): end of a one-sentence English question to the first reply audio, "
        f"embedded models, median < {limit_s:g} s"
    )
    threshold = f"< 1 (median < {limit_s:g} s)"
    med = conv.get("median_en") or {}
    if med.get("total_ms") is None:
        return _missing("voice", target, threshold, "no converse phase")
    counted = sum(1 for t in conv.get("turns", []) if t["language"] == "en" and t["turn"] != "warm-up")
    measured = (
        f"median {med['total_ms']:.0f} ms over {counted} turns (server {med.get('server_ms')} ms): "
        + ", ".join(
            f"{k.removesuffix('_ms').replace('_', ' ')} {v:.0f}"
            for k, v in med.items()
            if v is not None and k not in ("total_ms", "server_ms")
        )
    )
    ratio = med["total_ms"] / 1000 / limit_s
    return _row("voice", target, measured, threshold, ratio, ratio < 1)


_TARGETS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
    lambda r: _ttft(r, "parley-grpc", "gRPC"),
    lambda r: _ttft(r, "parley-rest", "REST/SSE through Envoy"),
    _cpu,
    _throughput,
    _unary_floor,
    _unary_rest,
    _loop,
    _memory,
    _voice,
)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target (see the module's doc); a target that fails to evaluate says why."""
    rows = []
    for fn in _TARGETS:
        try:
            rows.append(fn(results))
        except (KeyError, TypeError, ValueError) as exc:  # a phase that failed half-way
            rows.append(_row("?", "(a target)", f"not measured: {exc!r}", "", None, None))
    return rows


def cells(row: dict[str, Any]) -> list[str]:
    """A row's cells in ``COLUMNS`` order."""
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
    return [row["target"], row["measured"], row["threshold"], ratio, row["result"]]


def text_table(rows: list[dict[str, Any]]) -> str:
    """The targets as plain text for the terminal: one block per target."""
    lines = []
    for row in rows:
        target, measured, threshold, ratio, result = cells(row)
        lines.append(f"  {result:12s} {target}")
        lines.append(f"  {'':12s} ratio {ratio}, threshold {threshold}; {measured}")
    passed = sum(1 for r in rows if r["pass"])
    failed = sum(1 for r in rows if r["pass"] is False)
    lines.append(f"  {passed} PASS, {failed} FAIL, {len(rows) - passed - failed} not measured")
    return "\n".join(lines)
