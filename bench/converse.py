"""The ``converse`` phase: voice-to-voice latency of live voice, and where it goes (``bench/run.py``).

One Parley process of its own in the embedded default configuration (SQLite, the local model
SmolLM2-135M, Whisper base, espeak-ng; the Converse settings' defaults: a turn ends after 0.5 s
of silence, and is transcribed speculatively after a pause of 0.15 s). A client streams espeak-ng
speech at real-time pace in 20 ms frames over ``ChatService.Converse`` (``tests/support/live.py``'s
``LiveCall``, the live-voice tests' microphone), one turn per call, each in a new session, so no
turn carries history. The English agent has ``language: "en"`` (so Whisper is given the hint, as
for any agent that declares its language). First a warm-up turn (reported, not counted), then
``--converse-turns`` one-sentence English questions, then, reported for information,
``--converse-arabic`` Arabic ones (an agent with ``language: "ar"``) and ``--converse-detect``
English ones to an agent without a language (``en?`` in the table: Whisper first detects the
language among PARLEY_SPEECH_LANGUAGES, one more pass of its encoder).

Per turn, on the client's clock, from the instant a microphone would have delivered the end of the
voiced audio (the end of the last frame sent, less the silence espeak-ng leaves at the end of its
recording): ``VAD tail`` to the ``speech_stopped`` event (the end-of-turn silence, the VAD's
windows); ``transcription`` to the ``transcript`` event (what the speculative transcription did not
hide); ``first token`` to the first ``text_delta``; ``first sentence`` until the reply text holds
the whole first sentence; ``speech + encoding`` to the first ``audio_chunk`` (espeak-ng and the
PCM16 encoder for that sentence); ``total`` = end of speech to first audio. ``server`` is
``Message.voice_to_voice_latency`` as stored: from the end of speech as the VAD placed it to the
first audio chunk sent. The target (issue 18): the English turns' median total below 1.5 s.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import procs
from phases import ParleyUser, log

if TYPE_CHECKING:
    from parley_proto.v1 import chat_service_pb2 as pb
    from phases import Bench

__all__ = ["COLUMNS", "STAGES", "TARGET_S", "markdown_section", "phase_converse"]

#: Issue 18's target for the English turns' median voice-to-voice latency (s).
TARGET_S = 1.5
#: |sample| above this (int16) counts as voiced when trimming espeak-ng's trailing silence.
_VOICED = 300
ENGLISH = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "What colour is the sky?",
    "Which animal says moo?",
    "What is two plus two?",
    "Where does the sun rise?",
)
ARABIC = ("ما هي عاصمة فرنسا؟", "كم يوما في الأسبوع؟", "ما لون السماء؟")
INSTRUCTIONS = "You are a friendly guide. Answer briefly."
MAX_OUTPUT_TOKENS = 40
#: A turn's ``language`` column → the key of its group's median in results.json (median_<key>).
GROUPS = {"en": "en", "ar": "ar", "en?": "en_detected"}
GROUP_NAMES = {"en": "English", "ar": "Arabic", "en?": "English, language detected (agent without one),"}
#: (key in a turn's row, column title): the stages in the order they happen, then the sums.
STAGES = (
    ("vad_tail_ms", "VAD tail"),
    ("transcription_ms", "transcription"),
    ("first_token_ms", "first token"),
    ("first_sentence_ms", "first sentence"),
    ("speech_ms", "speech + encoding"),
)
COLUMNS = ("turn", "language", "said", "heard", *(t for _, t in STAGES), "total ms", "server ms")


def _timed_call() -> type:
    """``LiveCall`` that also notes when each event arrived (imported late: it needs the tests'
    modules on the path, which ``phases`` puts there)."""
    from tests.support.live import LiveCall

    class TimedCall(LiveCall):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.arrivals: list[tuple[float, pb.ConverseEvent]] = []
            super().__init__(*args, **kwargs)

        def _take(self, event: pb.ConverseEvent) -> None:
            self.arrivals.append((time.monotonic(), event))
            super()._take(event)

    return TimedCall


def _trailing_silence_s(samples: npt.NDArray[np.int16]) -> float:
    voiced = np.flatnonzero(np.abs(samples.astype(np.int32)) > _VOICED)
    last = int(voiced[-1]) + 1 if voiced.size else samples.shape[0]
    return (samples.shape[0] - last) / 16_000


def _stages(speech_end: float, arrivals: list[tuple[float, Any]]) -> dict[str, float | None]:
    """The stage durations (ms) of one turn from the event arrival times (see the docstring)."""
    t: dict[str, float] = {}
    text = ""
    first_sentence: str | None = None
    pending: list[tuple[float, int]] = []  # (arrival, length of the reply text after it)
    for when, event in arrivals:
        kind = event.WhichOneof("event")
        if kind in ("speech_stopped", "transcript"):
            t.setdefault(kind, when)
        elif kind == "chat_event":
            inner = event.chat_event.WhichOneof("event")
            if inner == "text_delta":
                t.setdefault("first_delta", when)
                text += event.chat_event.text_delta.text
                pending.append((when, len(text)))
            elif inner == "audio_chunk" and "audio" not in t:
                t["audio"] = when
                first_sentence = event.chat_event.audio_chunk.text.strip()
    if first_sentence is not None:
        end = text.find(first_sentence) + len(first_sentence) if first_sentence in text else len(text)
        t["sentence"] = next((w for w, n in pending if n >= end), t["audio"])
    order = [("speech_end", speech_end), *((k, t.get(k)) for k in
             ("speech_stopped", "transcript", "first_delta", "sentence", "audio"))]  # fmt: skip
    out: dict[str, float | None] = {}
    for (key, _), (_, a), (_, b) in zip(STAGES, order, order[1:], strict=False):
        out[key] = None if a is None or b is None else round((b - a) * 1000, 1)
    out["total_ms"] = None if "audio" not in t else round((t["audio"] - speech_end) * 1000, 1)
    return out


def _turn(
    user: ParleyUser, agent: str, text: str, voice: str, label: str, *, group: str = ""
) -> dict[str, Any]:
    from parley_proto.v1 import chat_service_pb2 as pb

    from tests.support.live import FRAME_S, pcm16_speech

    samples = pcm16_speech(text, voice)
    session = str(user.client.create_session(agent).name)
    call = _timed_call()(user.client.stubs.chat, pb.ConverseConfig(session=session))
    try:
        time.sleep(0.5)  # the stream is open and silent, as when a person starts to speak
        call.say(samples)
        while call.speaking():
            time.sleep(0.002)
        speech_end = time.monotonic() + FRAME_S - _trailing_silence_s(samples)
        call.wait(lambda: call.replies and call.replies[-1].completed is not None, timeout=120)
    finally:
        call.hang_up()
    if call.error is not None:
        raise call.error
    stored = call.replies[-1].completed
    heard = next((e.transcript.text for _, e in call.arrivals if e.WhichOneof("event") == "transcript"), "")
    row: dict[str, Any] = {
        "turn": label,
        "language": group or voice.split("-", maxsplit=1)[0],
        "said": text,
        "heard": heard,
    }
    row.update(_stages(speech_end, call.arrivals))
    latency = (
        stored.voice_to_voice_latency.ToNanoseconds() / 1e6
        if stored.HasField("voice_to_voice_latency")
        else None
    )
    row["server_ms"] = None if latency is None else round(latency, 1)
    row["reply"] = stored.text
    log(f"converse: {label} {row['language']} total {row['total_ms']} ms (server {row['server_ms']} ms), "
        f"heard {heard!r}")  # fmt: skip
    return row


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def phase_converse(bench: Bench) -> None:
    a = bench.args
    work = bench.work / "converse"
    work.mkdir(parents=True, exist_ok=True)
    turns: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "note": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
        "turns": turns,
        "target_s": TARGET_S,
    }
    bench.results["converse"] = result
    parley, target = procs.start_parley(work, {"access_token_ttl_seconds": "86400"}, name="parley-converse")
    bench.commands["converse: parley"] = "python -m parley (the embedded default)"
    user: ParleyUser | None = None
    try:
        procs.wait_serving(parley, target)
        user = ParleyUser(target)
        agent = user.agent(instructions=INSTRUCTIONS, max_output_tokens=MAX_OUTPUT_TOKENS, language="en",
                           display_name="Converse agent")  # fmt: skip
        any_agent = user.agent(instructions=INSTRUCTIONS, max_output_tokens=MAX_OUTPUT_TOKENS,
                               display_name="Converse agent without a language")  # fmt: skip
        ar_agent = user.agent(instructions="أجب باختصار بالعربية.", language="ar",
                              max_output_tokens=MAX_OUTPUT_TOKENS, display_name="Arabic agent")  # fmt: skip
        turns.append(_turn(user, agent, ENGLISH[0], "en-us", "warm-up"))
        for i in range(a.converse_turns):
            turns.append(_turn(user, agent, ENGLISH[i % len(ENGLISH)], "en-us", str(i + 1)))
        for i in range(a.converse_arabic):
            turns.append(_turn(user, ar_agent, ARABIC[i % len(ARABIC)], "ar", f"ar {i + 1}"))
        for i in range(a.converse_detect):
            turns.append(
                _turn(user, any_agent, ENGLISH[i % len(ENGLISH)], "en-us", f"en? {i + 1}", group="en?")
            )
    finally:
        if user is not None:
            user.close()
        parley.stop()
    for language, group_key in GROUPS.items():
        counted = [r for r in turns if r["language"] == language and r["turn"] != "warm-up"]
        if counted:
            result[f"median_{group_key}"] = {
                key: _median(counted, key) for key in (*(k for k, _ in STAGES), "total_ms", "server_ms")
            }


def markdown_section(conv: dict[str, Any]) -> list[str]:
    """The results.md section of ``conv`` (``results["converse"]``)."""

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    keys = ("turn", "language", "said", "heard", *(k for k, _ in STAGES), "total_ms", "server_ms")
    lines = ["## Live voice: voice-to-voice latency per turn (ChatService.Converse)", "", conv["note"], ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in conv["turns"]]
    for language, key in GROUPS.items():
        name = GROUP_NAMES[language]
        med = conv.get(f"median_{key}")
        if med:
            parts = ", ".join(f"{title} {cell(med[k])}" for k, title in STAGES)
            lines += ["", f"Median of the {name} turns (ms): {parts}; total {cell(med['total_ms'])}, "
                      f"server {cell(med['server_ms'])}."]  # fmt: skip
    return [*lines, ""]
