"""The ``loop`` phase: how long Parley's event loop stalls while its local model, speech (Whisper,
espeak-ng, MP3 encoding) and ``--loop-streams`` gRPC streams run, alone and at once (see
``LOOP_NOTE``, which results.md prints)."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import procs
import targets
from phases import LOADGEN, log, redact
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from phases import Bench

__all__ = ["LAG_INTERVAL_S", "LOOP_ALL_AT_ONCE", "LOOP_NOTE", "phase_loop"]

#: The event loop's longest stall allowed (issue "Performance": never blocked more than 25 ms).
LOOP_TARGET_MS = targets.LOOP_MAX_MS
#: The loop phase's step with everything at once (its loop lag is the loop target's measurement).
LOOP_ALL_AT_ONCE = "streams + voice message + text generation at once"
LOOP_PING_INTERVAL_MS = 2
#: PARLEY_LOOP_LAG_INTERVAL_S of the loop phase's Parley: a stall of S shows as a lag of at least
#: S minus this (the server's default, 0.1 s, would see a 25 ms stall one time in four).
LAG_INTERVAL_S = 0.002
#: PARLEY_LOOP_LAG_WINDOW_S of the loop phase's Parley: what each scrape of the lag's maximum covers.
LAG_WINDOW_S = 1.0
#: Seconds between two scrapes of the lag's maximum (well under the window: no gap between them).
SCRAPE_EVERY_S = 0.25
LAG_GAUGE = "parley_event_loop_lag_max_seconds"
LOOP_NOTE = " ".join(
    f"""
The measurement is the server's own: Parley's event-loop lag monitor (`parley_event_loop_lag_seconds`,
docs/observability.md), run for this phase every {LAG_INTERVAL_S * 1000:g} ms (PARLEY_LOOP_LAG_INTERVAL_S;
the default is 100 ms): a task on the event loop sleeps {LAG_INTERVAL_S * 1000:g} ms and measures how
much later it woke, which is how long the loop ran something else, waited for the GIL, or its thread
waited for a CPU; a stall of S ms shows as a lag of at least S - {LAG_INTERVAL_S * 1000:g} ms. Its
maximum over the last {LAG_WINDOW_S:g} s (PARLEY_LOOP_LAG_WINDOW_S, gauge `{LAG_GAUGE}`) is scraped
every {SCRAPE_EVERY_S:g} s, and a step's `loop lag max` is the largest scrape whose second overlaps the
step (so it may include up to {LAG_WINDOW_S:g} s either side: it can only overstate). The target passes
when that lag plus one interval (the longest stall it allows) is at most the target. This phase runs on
a Parley of its own (the stack's SQLite Parley restarted with these two settings, same database and
port), so the other phases' CPU figures do not pay for the {LAG_INTERVAL_S * 1000:g} ms wake-ups
(about 2% of a core). Besides, a Go client calls grpc.health.v1.Health/Check on Parley one call at a
time, {LOOP_PING_INTERVAL_MS} ms apart, at nice -10 in a session of its own whose scheduler autogroup
is at nice -10 too: a call's latency is the loop's stall plus the time gRPC's own threads (its network
and completion-queue threads) and the client wait for a CPU, so it bounds the stall from above only.
`control` is the same client pinging, at the same time, an idle asyncio process (the /health of a
second bench upstream that serves nothing else): where the control's pings are as slow as Parley's,
the machine was too busy to run a process that wakes up, whatever that process does (on this 2-core
machine with the models running, an idle process waits up to tens of ms). Local model: SmolLM2-135M in
llama.cpp (PARLEY_LOCAL_THREADS default); speech: Whisper base (faster-whisper, PARLEY_WHISPER_THREADS
default), espeak-ng, MP3 encoding. In the step with streams, `--loop-streams` clients stream from the
bench upstream over gRPC (as in the stream phase) while a voice message and a local-model reply run;
its row covers only the time when all three ran (from when the streams had all started to when the
voice and text replies were done). Where the kernel's scheduler autogroup is on (the Set-up's Machine
line says), the kernel shares the CPU between sessions (each of these processes is one, and so is each
of Parley's model processes: llama.cpp's engine, Whisper's worker, espeak-ng, niced with their
autogroups) before threads, and a thread's nice orders it only within its own session (sched(7)).
""".split()
)


def _restart_parley(bench: Bench) -> str:
    """Restart the stack's Parley with the loop phase's lag settings and a metrics port of its own
    (same database, data directory and gRPC port: the bench's user and agents stay valid); the
    URL of its ``/metrics``."""
    assert bench.parley is not None
    port = procs.free_port()
    settings = {
        **bench.parley_settings,
        "loop_lag_interval_s": f"{LAG_INTERVAL_S:g}",
        "loop_lag_window_s": f"{LAG_WINDOW_S:g}",
        "metrics_listen": f"127.0.0.1:{port}",
    }
    log("restarting Parley with PARLEY_LOOP_LAG_INTERVAL_S=" + settings["loop_lag_interval_s"])
    bench.parley.stop()
    bench.procs.remove(bench.parley)
    bench.parley, _ = procs.start_parley(
        bench.work, settings, name="parley-loop", env={"PARLEY_GRPC_LISTEN": bench.target}
    )
    bench.procs.append(bench.parley)
    procs.wait_serving(bench.parley, bench.target)
    bench.commands["parley (loop phase)"] = bench.commands.get("parley", "python -m parley") + (
        f" PARLEY_LOOP_LAG_INTERVAL_S={LAG_INTERVAL_S:g} PARLEY_LOOP_LAG_WINDOW_S={LAG_WINDOW_S:g}"
        " PARLEY_METRICS_LISTEN=127.0.0.1:$METRICS_PORT"
    )
    return f"http://127.0.0.1:{port}/metrics"


class LagScraper:
    """``with LagScraper(url) as lags``: scrapes ``LAG_GAUGE`` every ``SCRAPE_EVERY_S`` in a thread;
    ``lags.samples`` holds ``(sent, received, lag)``: Unix ms, Unix ms, ms."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-lag scraper", daemon=True)

    def __enter__(self) -> LagScraper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.wait(SCRAPE_EVERY_S):
                sent = time.time() * 1000
                try:
                    # Only the gauge (prometheus-client's name[] filter): a scrape of the whole
                    # registry holds the GIL for several ms, which the loop's lag then shows.
                    text = client.get(self.url, params={"name[]": LAG_GAUGE}).text
                except httpx.HTTPError:
                    continue  # a missing scrape shows as a gap (see _lag)
                received = time.time() * 1000
                for family in text_string_to_metric_families(text):
                    if family.name == LAG_GAUGE:
                        self.samples.append((sent, received, family.samples[0].value * 1000))


def _lag(samples: list[tuple[float, float, float]], t0: float, t1: float) -> dict[str, Any]:
    """The largest lag of the scrapes whose window (``LAG_WINDOW_S`` before each) overlaps [t0, t1]
    (Unix ms), and whether they cover it without a gap; ``loop_lag_max_ms`` is None if not."""
    window = LAG_WINDOW_S * 1000
    inside = [s for s in samples if s[1] >= t0 and s[0] - window <= t1]
    # The server computes a scrape's maximum between its sending and its receipt, over the window
    # before that moment: scrape i covers at least [received_i - window, sent_i].
    covered = bool(inside) and inside[0][1] - window <= t0 and inside[-1][0] >= t1
    covered = covered and all(b[1] - window <= a[0] for a, b in itertools.pairwise(inside))
    return {
        "loop_lag_max_ms": round(max(s[2] for s in inside), 2) if covered else None,
        "loop_lag_scrapes": len(inside),
    }


def _start_pinger(bench: Bench) -> subprocess.Popen[str]:
    """The Go pinger of Parley's health service and of an idle control process (started here);
    it stops and prints its report (JSON) when its standard input closes."""
    # The control: a second upstream nobody streams from, an asyncio process that stays idle
    # (the first one serves the 50 streams, so its /health waits behind them).
    idle, idle_url = procs.start_upstream(bench.work, tokens=1, rate=1.0, name="control")
    bench.procs.append(idle)
    control = idle_url.removesuffix("/v1") + "/health"
    argv = [str(LOADGEN), "ping", "-target", bench.target, "-control-url", control, "-duration", "600s",
            "-interval", f"{LOOP_PING_INTERVAL_MS}ms", "-stop-on-stdin-eof"]  # fmt: skip
    # At nice -10 in a session of its own whose autogroup is at nice -10 too: in the bench's
    # session it waited for a CPU behind the 50-stream client beside it however nice it was.
    ping = subprocess.Popen(
        ["nice", "-n", "-10", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    autogroup = procs.set_autogroup_nice(ping.pid, -10)
    bench.commands["event-loop ping"] = redact(argv) + (
        "  (at nice -10, in its own session, its autogroup at nice -10)" if autogroup else "  (at nice -10)"
    )
    return ping


def phase_loop(bench: Bench) -> None:
    """Parley's event-loop lag, and pings of its health service, while its local model and speech
    run, alone, at once, and with streams besides; the largest of each per step (see ``LOOP_NOTE``)."""
    from parley_proto.v1 import chat_service_pb2 as chat_pb

    metrics_url = _restart_parley(bench)
    user = bench.user
    wav = bench.work / "question.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "What is the capital of France?"], check=True)
    audio = wav.read_bytes()
    text_agent = user.agent(model="local", max_output_tokens=bench.args.loop_tokens, display_name="Local")
    voice_agent = user.agent(model="local", max_output_tokens=48, display_name="Voice")
    text_sessions = user.sessions(text_agent, 3)
    voice_sessions = user.sessions(voice_agent, 3)
    n_streams = bench.args.loop_streams
    stream_sessions = user.sessions(bench.bench_agent, n_streams) if n_streams else []
    chat = user.client.stubs.chat

    def text(session: str) -> dict[str, Any]:
        request = chat_pb.SendMessageRequest(session=session, text="Tell me a short story about a cat.")
        events = list(chat.SendMessage(request, timeout=180))
        return {
            "text_deltas": sum(1 for e in events if e.HasField("text_delta")),
            "completed": any(e.HasField("message_completed") for e in events),
        }

    def voice(session: str) -> dict[str, Any]:
        request = chat_pb.SendVoiceMessageRequest(session=session, audio=audio)
        events = list(chat.SendVoiceMessage(request, timeout=300))
        return {
            "transcript": next((e.transcript.text for e in events if e.HasField("transcript")), ""),
            "audio_chunks": sum(1 for e in events if e.HasField("audio_chunk")),
            "completed": any(e.HasField("message_completed") for e in events),
        }

    def both(i: int = 1) -> dict[str, Any]:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            v = pool.submit(voice, voice_sessions[i])
            t = pool.submit(text, text_sessions[i])
            return {"voice": v.result(), "text": t.result()}

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("idle (baseline)", lambda: time.sleep(3)),
        ("text generation, local model", lambda: text(text_sessions[0])),
        ("voice message, first (loads Whisper)", lambda: voice(voice_sessions[0])),
        ("voice message + text generation at once", both),
    ]
    if n_streams:
        name = LOOP_ALL_AT_ONCE.replace("streams", f"{n_streams} streams", 1)
        steps.append((name, lambda: _with_streams(bench, stream_sessions, lambda: both(2))))
    steps.append(("idle after", lambda: time.sleep(2)))
    ping = _start_pinger(bench)
    windows: list[tuple[str, float, float, Any]] = []
    try:
        with LagScraper(metrics_url) as lags:
            time.sleep(1.0)  # connected; the first pings (connection set-up) belong to no phase
            for name, step in steps:
                log(f"event loop: {name}")
                t0 = time.time() * 1000
                outcome = step()
                windows.append((name, t0, time.time() * 1000, outcome))
            time.sleep(SCRAPE_EVERY_S * 2)  # a scrape after the last step's end
    finally:
        assert ping.stdin is not None and ping.stdout is not None
        ping.stdin.close()  # the pinger stops and prints its report
        out = ping.stdout.read()
        ping.wait(timeout=60)
    bench.results["loop"] = {
        "target_ms": LOOP_TARGET_MS,
        "streams": n_streams,
        "note": LOOP_NOTE,
        "lag_interval_ms": LAG_INTERVAL_S * 1000,
        "lag_window_s": LAG_WINDOW_S,
        "phases": _loop_phases(windows, json.loads(out), lags.samples),
    }


def _with_streams(bench: Bench, sessions: list[str], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One gRPC stream per session from the upstream and, once they have all started, ``work``
    (a voice message and a local-model reply at once); its outcome, the streams' figures and
    ``window_ms``, the time while both ran (Unix ms)."""
    ramp = 1.0
    extra = ["-duration", "600s", "-ramp", f"{ramp:g}s", "-max-tokens", str(bench.args.tokens),
             "-expect-tokens", str(bench.args.tokens), "-stop-on-stdin-eof"]  # fmt: skip
    argv = bench.stream_argv("parley-grpc", len(sessions), extra, sessions=sessions)
    bench.commands["event-loop streams"] = redact(argv)
    streams = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(ramp + 0.5)  # every client has sent its first request
        t0 = time.time() * 1000
        outcome = work()
        t1 = time.time() * 1000
    finally:
        # communicate() closes its standard input: no new request; the replies under way finish.
        out, _ = streams.communicate(timeout=180)
    if streams.returncode != 0:
        raise RuntimeError(f"loadgen stream exited with {streams.returncode}")
    summary = json.loads(out)
    outcome["streams"] = {
        "clients": len(sessions),
        **{k: summary[k] for k in ("requests", "errors", "tokens_per_s")},
        "ttft_p50_ms": summary["ttft_ms"].get("p50"),
    }
    outcome["window_ms"] = [t0, t1]
    return outcome


# --- helpers ---------------------------------------------------------------------------------


def _loop_phases(
    windows: list[tuple[str, float, float, Any]],
    pings: dict[str, Any],
    lags: list[tuple[float, float, float]],
) -> list[dict[str, Any]]:
    """A row per step of the loop phase: the loop's largest lag, its pings' latencies and the
    control's, in the step's window (or the ``window_ms`` its outcome names: while everything
    ran at once)."""
    phases = []
    for name, step_t0, step_t1, outcome in windows:
        t0, t1 = step_t0, step_t1
        if isinstance(outcome, dict) and "window_ms" in outcome:
            t0, t1 = outcome.pop("window_ms")
        ctl = _window(pings["control_samples"], t0, t1)
        row: dict[str, Any] = {"phase": name, "duration_s": round((t1 - t0) / 1000, 1), **_lag(lags, t0, t1)}
        row.update(_window(pings["samples"], t0, t1), control=ctl, outcome=outcome)
        row["all_at_once"] = isinstance(outcome, dict) and "streams" in outcome
        phases.append(row)
        log(f"event loop: {name}: lag max {row['loop_lag_max_ms']} ms; ping max {row.get('max_ms')} ms "
            f"over {row['pings']} pings "
            f"(control max {ctl.get('max_ms')} ms), {outcome}")  # fmt: skip
    return phases


def _window(samples: list[list[float]], t0: float, t1: float) -> dict[str, Any]:
    """Latency statistics of the pings that started in [t0, t1) (Unix ms)."""
    inside = [s for s in samples if t0 <= s[0] < t1]
    lat = sorted(s[1] for s in inside)
    if not lat:
        return {"pings": 0}
    worst = max(inside, key=lambda s: s[1])
    return {
        "pings": len(lat),
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max_ms": lat[-1],
        "max_at_s": round((worst[0] - t0) / 1000, 2),
    }
