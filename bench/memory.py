"""The ``memory`` phase: Parley's resident memory over 1,000 replies (see ``bench/run.py``).

One Parley process of its own in the embedded default configuration (SQLite in the run's work
directory, the local model and Whisper loaded at start-up, espeak-ng; nothing else set but the
bench upstream as an OpenAI-compatible endpoint and a long token lifetime), and an upstream of its
own that answers every request with a few tokens quickly (``--memory-tokens`` at
``MEMORY_RATE`` tokens/s), so 1,000 replies take about a minute. The load generator sends the
replies over gRPC from ``--memory-clients`` clients, each reply in a session of its own (created
just before, ``--memory-step`` at a time), and the Parley process's ``VmRSS`` (with ``RssAnon``
and ``RssFile``) is read from ``/proc/PID/status`` after start-up and after every step; the sample
after half the replies and the last one bound its growth (``GROWTH_BOUND_MIB``).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import procs
from phases import LOADGEN, PROMPT, ParleyUser, log, redact

if TYPE_CHECKING:
    from phases import Bench

__all__ = ["GROWTH_BOUND_MIB", "phase_memory", "rss_mib"]

#: Tokens/s per stream of this phase's upstream: a reply of 8 tokens takes 8 ms upstream.
MEMORY_RATE = 1000.0
#: The most the VmRSS may grow from the reply at half the run (the 500th) to the last (the 1,000th).
#: Why 5 MiB (10 KiB per reply over those 500): what may still grow by then without leaking is
#: bounded and small. SQLite's page cache follows the database file up to 2000 KiB per pooled
#: connection (PRAGMA cache_size's default), and the file grows by about 2.7 KiB per reply here (a
#: session, two messages, their bookkeeping); the allocators keep memory in arenas (pymalloc's of
#: 1 MiB), and glibc sometimes hands tens of MiB back at once (a 30 MiB drop around reply 300 on
#: this machine), which is why growth is taken from the 500th reply, not from start-up. Measured:
#: +2.0 MiB from reply 500 to 1,000. A leak of one reply's objects (its events, messages, ORM rows:
#: 10 KiB or more) would add 5 MiB or more over 500 replies and fail; a leak under 10 KiB per
#: reply needs a longer run (``--memory-replies``) to show.
GROWTH_BOUND_MIB = 5.0
#: Fields of /proc/PID/status recorded (kB there, MiB here).
_STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def rss_mib(pid: int) -> dict[str, float]:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` and ``VmHWM`` of ``pid`` in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in _STATUS_FIELDS:
            out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


def models_rss_mib(pid: int) -> float:
    """``VmRSS`` (MiB) of ``pid``'s descendants together: the embedded models' own processes
    (llama.cpp's engine, Whisper's worker), which the server's own figures leave out."""
    total = 0.0
    for child in procs.descendants(pid):
        if child != pid:
            with contextlib.suppress(OSError):
                total += rss_mib(child).get("VmRSS", 0.0)
    return round(total, 1)


def _boundaries(replies: int, step: int) -> list[int]:
    """Reply counts after which the RSS is sampled: every ``step``, half the run and the end."""
    return sorted({*range(step, replies, step), replies // 2, replies} - {0})


def phase_memory(bench: Bench) -> None:
    a = bench.args
    n, tokens, clients = a.memory_replies, a.memory_tokens, a.memory_clients
    work = bench.work / "memory"
    work.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "note": (
            f"One Parley process of its own in the embedded default configuration (SQLite, the local model "
            f"and Whisper loaded at start-up), {n} replies of {tokens} tokens from an upstream of its own "
            f"({MEMORY_RATE:g} tokens/s), sent over gRPC by the load generator from {clients} clients, each "
            "reply in a new session (created just before it). `VmRSS` is the process's resident memory "
            "(`/proc/PID/status`), `RssAnon` its heap part (where a leak shows), `RssFile` mapped files "
            "(the GGUF model, libraries), all of the server process; `models` is the VmRSS of its model "
            "processes together (llama.cpp's engine, Whisper's worker). Growth is the VmRSS after the last "
            "reply minus after half of "
            f"them; the bound is {GROWTH_BOUND_MIB:g} MiB (why: `GROWTH_BOUND_MIB` in bench/memory.py)."
        ),
        "replies": n,
        "tokens": tokens,
        "clients": clients,
        "bound_mib": GROWTH_BOUND_MIB,
        "samples": samples,
    }
    bench.results["memory"] = result
    upstream, upstream_url = procs.start_upstream(work, tokens=tokens, rate=MEMORY_RATE)
    parley: procs.Proc | None = None
    user: ParleyUser | None = None
    try:
        settings = {
            "openai_compatible": json.dumps({"bench": {"base_url": upstream_url, "api_key": "sk-bench"}}),
            "access_token_ttl_seconds": "86400",
        }
        parley, target = procs.start_parley(work, settings, name="parley-memory")
        bench.commands["memory: parley"] = "python -m parley with " + " ".join(
            f"PARLEY_{k.upper()}={shlex.quote(v)}" for k, v in settings.items()
        ).replace(upstream_url, "http://127.0.0.1:$UPSTREAM/v1")
        procs.wait_serving(parley, target)
        time.sleep(1.0)  # start-up's last allocations settle
        samples.append(
            {"replies": 0, "when": "after start-up", **rss_mib(parley.pid)}
            | {"models": models_rss_mib(parley.pid)}
        )
        log(f"memory: Parley serving on {target}, VmRSS {samples[0]['VmRSS']} MiB after start-up")
        user = ParleyUser(target)
        agent = user.agent(model="bench/bench-model", max_output_tokens=tokens, display_name="Memory agent")
        done = errors = 0
        started = time.monotonic()
        for upto in _boundaries(n, a.memory_step):
            sessions = user.sessions(agent, upto - done)
            argv = [str(LOADGEN), "stream", "-kind", "parley-grpc", "-target", target, "-token", user.token,
                    "-clients", str(min(clients, upto - done)), "-sessions", ",".join(sessions),
                    "-session-per-request", "-per-client", str(upto - done), "-duration", "600s",
                    "-ramp", "0s", "-prompt", PROMPT, "-expect-tokens", str(tokens),
                    "-timeout", "60s"]  # fmt: skip
            bench.commands.setdefault("memory: replies", redact(argv))
            run = procs.run_json(argv, timeout=900)
            done = upto
            errors += run["errors"]
            samples.append(
                {
                    "replies": done,
                    **rss_mib(parley.pid),
                    "models": models_rss_mib(parley.pid),
                    "requests": run["requests"],
                    "errors": run["errors"],
                    "reply_ms_p50": run["total_ms"].get("p50"),
                }
            )
            log(f"memory: {done} replies, VmRSS {samples[-1]['VmRSS']} MiB, RssAnon "
                f"{samples[-1]['RssAnon']} MiB, {run['errors']} errors")  # fmt: skip
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        result["errors"] = errors
        by = {s["replies"]: s for s in samples}
        half, end = by[n // 2], by[n]
        result.update(
            rss_start_mib=samples[0]["VmRSS"],
            models_start_mib=samples[0]["models"],
            rss_half_mib=half["VmRSS"],
            rss_end_mib=end["VmRSS"],
            growth_mib=round(end["VmRSS"] - half["VmRSS"], 1),
            anon_growth_mib=round(end["RssAnon"] - half["RssAnon"], 1),
        )
        log(f"memory: VmRSS {result['rss_start_mib']} MiB after start-up, {result['rss_half_mib']} MiB after "
            f"{n // 2} replies, {result['rss_end_mib']} MiB after {n}: growth {result['growth_mib']:+} MiB "
            f"(bound {GROWTH_BOUND_MIB:g} MiB)")  # fmt: skip
    finally:
        if user is not None:
            user.close()
        if parley is not None:
            parley.stop()
        upstream.stop()
