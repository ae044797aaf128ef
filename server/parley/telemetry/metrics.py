"""Parley's own Prometheus metrics (prefix ``parley_``), in prometheus-client's default registry.

Every instrument is created once, at import, and recorded where the event is known
(docs/observability.md has the table):

- run end (``runs/manager.py``): :func:`run_finished` — runs by status and stop reason, tokens
  by provider and model (counted once per run, never per delta), time to first token;
- the provider call (``domain/reply.py``, ``domain/turn.py``): provider errors by reason;
- voice (``domain/voice.py``): speech-to-text and text-to-speech seconds, time to first audio.

Labels stay bounded: provider names come from settings, reasons, statuses and stop reasons are
enums, and model names (which agents choose) are cut off at :data:`MAX_MODELS` distinct values per
process, past which they are counted as ``other``. No user, session or message ids.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "INPUT_TOKENS",
    "MAX_MODELS",
    "OUTPUT_TOKENS",
    "PROVIDER_ERRORS",
    "RUNS_ACTIVE",
    "RUNS_FINISHED",
    "SPEECH_TO_TEXT",
    "TEXT_TO_SPEECH",
    "TIME_TO_FIRST_AUDIO",
    "TIME_TO_FIRST_TOKEN",
    "VOICE_TO_VOICE_LATENCY",
    "model_labels",
    "provider_error",
    "run_finished",
]

#: Distinct ``model`` label values one process reports; later models are ``other``.
MAX_MODELS = 64

#: Seconds until the first token or audio chunk: 50 ms to a minute.
_FIRST_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
#: Seconds of a transcription (a recording of up to 10 minutes).
_STT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
#: Seconds of one sentence's synthesis.
_TTS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

TIME_TO_FIRST_TOKEN = Histogram(
    "parley_time_to_first_token_seconds",
    "Seconds from the start of a reply's model call to its first text delta (per run: the reply's "
    "last step for a tool turn).",
    ["provider", "model"],
    buckets=_FIRST_BUCKETS,
)
TIME_TO_FIRST_AUDIO = Histogram(
    "parley_time_to_first_audio_seconds",
    "Seconds from the start of a voice reply's run (after speech-to-text) to its first audio chunk.",
    ["provider"],
    buckets=_FIRST_BUCKETS,
)
VOICE_TO_VOICE_LATENCY = Histogram(
    "parley_voice_to_voice_latency_seconds",
    "Live conversations (Converse): seconds from the end of the user's speech to the reply's "
    "first audio chunk (the silence wait, speech-to-text, first sentence, its speech).",
    ["provider"],
    buckets=_FIRST_BUCKETS,
)
SPEECH_TO_TEXT = Histogram(
    "parley_speech_to_text_seconds",
    "Seconds one transcription of a voice message took (successful ones).",
    ["provider"],
    buckets=_STT_BUCKETS,
)
TEXT_TO_SPEECH = Histogram(
    "parley_text_to_speech_seconds",
    "Seconds one synthesis took (one sentence of a spoken reply, or of SynthesizeSpeech).",
    ["provider"],
    buckets=_TTS_BUCKETS,
)
INPUT_TOKENS = Counter(
    "parley_input_tokens",
    "Prompt tokens of finished runs (every model call of the run).",
    ["provider", "model"],
)
OUTPUT_TOKENS = Counter(
    "parley_output_tokens",
    "Generated tokens of finished runs (every model call of the run).",
    ["provider", "model"],
)
RUNS_FINISHED = Counter(
    "parley_runs_finished",
    "Runs (replies) that ended, by the stored reply's status and stop reason.",
    ["status", "stop_reason"],
)
RUNS_ACTIVE = Gauge("parley_runs_active", "Runs of this process not yet ended (including paused ones).")
PROVIDER_ERRORS = Counter(
    "parley_provider_errors",
    "Model provider calls that failed, by provider and error reason (ErrorReason).",
    ["provider", "reason"],
)

_models: set[tuple[str, str]] = set()
_models_lock = threading.Lock()


def model_labels(qualified: str) -> tuple[str, str]:
    """``(provider, model)`` label values of a ``provider/model`` name, with the model cut off as
    ``other`` once :data:`MAX_MODELS` distinct pairs were seen (``("", "")`` for an empty name)."""
    provider, _, model = qualified.partition("/")
    key = (provider, model)
    if key in _models:
        return key
    with _models_lock:
        if len(_models) < MAX_MODELS:
            _models.add(key)
            return key
    return provider, "other"


def provider_error(provider: str, reason: str) -> None:
    """Count a failed model call of ``provider`` (``reason``: an ``ErrorReason`` name)."""
    PROVIDER_ERRORS.labels(provider, reason).inc()


def run_finished(
    *,
    status: str,
    stop_reason: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    time_to_first_token_s: float | None,
) -> None:
    """Record one ended run: ``status`` and ``stop_reason`` of its stored reply (lower-case enum
    values; ``stop_reason`` ``""`` is reported as ``none``), ``model`` as ``provider/model``, the
    tokens of all its model calls, and its time to first token (seconds; None: no text came)."""
    RUNS_FINISHED.labels(status or "unknown", stop_reason or "none").inc()
    if not model:
        return
    provider, name = model_labels(model)
    if input_tokens:
        INPUT_TOKENS.labels(provider, name).inc(input_tokens)
    if output_tokens:
        OUTPUT_TOKENS.labels(provider, name).inc(output_tokens)
    if time_to_first_token_s is not None:
        TIME_TO_FIRST_TOKEN.labels(provider, name).observe(time_to_first_token_s)
