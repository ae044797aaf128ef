"""Spans (and the metrics beside them) of what a run does: the agent's turn, each model call, each
server tool call, speech-to-text and text-to-speech.

Span names and attributes follow the OpenTelemetry GenAI semantic conventions where they have
one (``invoke_agent``, ``chat {model}``, ``execute_tool {name}``); speech has none, so its spans
are ``speech_to_text`` and ``text_to_speech`` with ``parley.*`` attributes. Attributes never hold
message text, tool arguments or results, tokens or passwords: only names, ids, counts, reasons.

Every span is made by the ``parley`` tracer of the global tracer provider: a no-op (a few
microseconds per span) until ``parley.telemetry.tracing`` installs the SDK's. Spans are made per
call, never per streamed token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from parley.telemetry import metrics

__all__ = ["TRACER", "ChatCall", "error_reason", "mark_error", "run_span", "speech_span", "tool_span"]

#: The tracer of every Parley span (a proxy: it follows the global provider once one is set).
TRACER = trace.get_tracer("parley")

#: ``gen_ai.provider.name`` of the providers whose name differs from Parley's provider name.
_GENAI_PROVIDER = {"bedrock": "aws.bedrock"}


def error_reason(exc: BaseException) -> str:
    """The ``ErrorReason`` name of a Parley error (its ``reason``), else ``INTERNAL``."""
    reason = getattr(exc, "reason", None)
    return str(getattr(reason, "value", "") or "INTERNAL")


def mark_error(span: Span, error_type: str, description: str = "") -> None:
    """Mark ``span`` failed: status ERROR and ``error.type`` (a low-cardinality name)."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description or None))


def _fail(span: Span, exc: BaseException) -> str:
    reason = error_reason(exc)
    mark_error(span, reason, type(exc).__name__)
    return reason


class ChatCall:
    """One model call (``provider.stream``): a CLIENT span ``chat {model}`` with the GenAI request
    attributes, ended by :meth:`finished` (finish reason, usage) or :meth:`failed` (which also
    counts ``parley_provider_errors_total``). The span is not made current: the run's other spans
    are its siblings."""

    __slots__ = ("_provider", "_span")

    def __init__(self, provider: str, model: str, *, max_tokens: int, temperature: float | None) -> None:
        self._provider = provider
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": _GENAI_PROVIDER.get(provider, provider),
            "gen_ai.system": _GENAI_PROVIDER.get(provider, provider),
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": max_tokens,
        }
        if temperature is not None:
            attributes["gen_ai.request.temperature"] = temperature
        self._span = TRACER.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)

    def finished(self, finish_reason: str, input_tokens: int, output_tokens: int) -> None:
        """The stream ended (normally, or closed early by the run: then ``finish_reason`` says why)."""
        span = self._span
        if span.is_recording():
            span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        span.end()

    def failed(self, exc: BaseException) -> None:
        """The call raised ``exc``; a cancellation (the run stopped) is not an error of the provider."""
        if isinstance(exc, Exception):
            metrics.provider_error(self._provider, _fail(self._span, exc))
        else:
            self._span.set_attribute("gen_ai.response.finish_reasons", ["cancelled"])
        self._span.end()


@contextmanager
def run_span(run_id: str, session_id: str) -> Iterator[Span]:
    """The span of a run (``invoke_agent``), current while the run's body executes, so its model
    calls, tool calls and speech are its children. The run's task copies the context of the RPC
    that started it, so this span is that RPC's child, even when the run outlives it."""
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.conversation.id": session_id,
        "parley.run.id": run_id,
    }
    with TRACER.start_as_current_span(
        "invoke_agent",
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextmanager
def tool_span(name: str, call_id: str, kind: str) -> Iterator[Span]:
    """The span of one server-side tool call (``execute_tool {name}``), current while it runs.
    ``kind`` is the Parley tool kind (``http``, ``mcp``, ``unknown``)."""
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function",
        "parley.tool.kind": kind,
    }
    with TRACER.start_as_current_span(
        f"execute_tool {name}",
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextmanager
def speech_span(direction: str, provider: str, language: str = "") -> Iterator[Span]:
    """A ``speech_to_text`` or ``text_to_speech`` span (``direction``), current while it runs;
    its duration is also observed in ``parley_speech_to_text_seconds`` /
    ``parley_text_to_speech_seconds`` when it succeeds."""
    histogram = metrics.SPEECH_TO_TEXT if direction == "speech_to_text" else metrics.TEXT_TO_SPEECH
    attributes = {"parley.speech.provider": provider}
    if language:
        attributes["parley.speech.language"] = language
    started = time.perf_counter()
    with TRACER.start_as_current_span(
        direction,
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            _fail(span, exc)
            raise
    histogram.labels(provider).observe(time.perf_counter() - started)
