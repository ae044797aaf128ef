"""Logging of a Parley process: text or JSON lines on stderr, with the call's context.

:func:`configure_logging` (called once by ``parley-server``) installs one stderr handler on the
root logger, in one of two formats (``PARLEY_LOG_FORMAT``):

- ``text``: ``2026-12-10 10:00:00,123 INFO parley.access /parley.v1.ChatService/SendMessage OK ...``;
- ``json``: one object per line (python-json-logger), e.g. ::

      {"time": "2026-12-10T10:00:00.123Z", "level": "INFO", "logger": "parley.access",
       "message": "...", "request_id": "0193...", "user_id": "0193...", "trace_id": "4bf9..."}

  ``time`` is RFC 3339 in UTC (milliseconds); ``request_id`` is the id of the RPC the record was
  logged in (the one it returns in ``x-request-id`` and ``RequestInfo``; a run logs with the
  request id of the call that started it); ``user_id`` the authenticated caller; ``trace_id``
  and ``span_id`` the current OpenTelemetry span's (hex, when opentelemetry-api is installed and
  a span is current). Each of these four is left out when unknown. An exception adds
  ``exc_info`` (the traceback as text).

Both formats pass every record through :func:`redact` first, which masks what must never reach
a log even by accident: JWTs (access and refresh tokens), ``Bearer`` credentials, passwords in
URLs, the query strings of http(s) URLs and ``sk-`` API keys. Python warnings are logged too, so in
JSON mode stderr holds JSON lines only (a crash in native code excepted).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from parley.api.interceptors import request_id_var
from parley.auth.interceptor import principal_var

#: ``opentelemetry.trace`` when opentelemetry-api is installed (tracing itself is set up elsewhere).
_otel_trace: Any
try:
    _otel_trace = importlib.import_module("opentelemetry.trace")
except ImportError:  # pragma: no cover - depends on the installation
    _otel_trace = None

__all__ = ["QUIET_LOGGERS", "TEXT_FORMAT", "ContextFilter", "configure_logging", "redact"]

#: The ``text`` format (what ``parley-server`` always printed).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

#: Libraries that log every request at INFO, with its full URL (an HTTP tool's or MCP server's,
#: which may carry a key) or an MCP session id: WARNING and above only.
QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "mcp")

LogFormat = Literal["text", "json"]

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT: three base64url parts, the first two JSON objects ("eyJ" is '{"').
    (re.compile(r"\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*"), "[redacted jwt]"),
    (re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+"), r"\1[redacted]"),
    # user:password@ in a URL.
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), r"\1[redacted]@"),
    # The query of an http(s) URL (``?api_key=...``): whatever its parameters are named.
    (re.compile(r"(?i)(\bhttps?://[^\s?#'\"]+)\?[^\s#'\"]*"), r"\1?[redacted]"),
    # OpenAI-style API keys (sk-..., sk-proj-...).
    (re.compile(r"\bsk-[\w-]{16,}"), "sk-[redacted]"),
)


#: Each pattern of ``_REDACTIONS`` matches only text holding one of these (``bearer`` in any case):
#: a line with none of them (nearly every line) skips the patterns.
_MARKERS = ("eyJ", "://", "sk-")


def redact(text: str) -> str:
    """``text`` with tokens, credentials and keys masked (see the module docstring)."""
    if not any(marker in text for marker in _MARKERS) and "bearer" not in text.lower():
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current OpenTelemetry span, in hex; None without one."""
    if _otel_trace is None:
        return None
    context = _otel_trace.get_current_span().get_span_context()
    if not context.trace_id:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class ContextFilter(logging.Filter):
    """Redacts each record's message (:func:`redact`) and adds the call's context to it as
    attributes: ``request_id`` (``parley.api.interceptors.request_id_var``), ``user_id``
    (``parley.auth.interceptor.principal_var``), ``trace_id`` and ``span_id`` (OpenTelemetry),
    each only when known. Install it on a handler, so records of every logger pass it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when formatting
            message = None
        if message is not None:
            redacted = redact(message)
            if redacted != message or record.args:
                record.msg, record.args = redacted, None
        if request_id := request_id_var.get():
            setattr(record, "request_id", request_id)  # noqa: B010 (LogRecord declares no such field)
        if (principal := principal_var.get()) is not None:
            setattr(record, "user_id", principal.user_id)  # noqa: B010
        if ids := _trace_ids():
            setattr(record, "trace_id", ids[0])  # noqa: B010
            setattr(record, "span_id", ids[1])  # noqa: B010
        return True


class _TextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


class _JsonLineFormatter(JsonFormatter):
    """python-json-logger's formatter with ``time`` first (RFC 3339, UTC) and the field names of
    the module docstring."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        created = datetime.fromtimestamp(record.created, UTC)
        log_data["time"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)

    def formatException(self, ei: Any) -> str | list[str]:  # type: ignore[override]
        return _redacted(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str | list[str]:  # type: ignore[override]
        return _redacted(super().formatStack(stack_info))


def _redacted(text: str | list[str]) -> str | list[str]:
    return redact(text) if isinstance(text, str) else [redact(line) for line in text]


def _formatter(log_format: LogFormat) -> logging.Formatter:
    return _JsonLineFormatter() if log_format == "json" else _TextFormatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Log records at ``level`` and above to stderr in ``log_format`` (``text`` or ``json``),
    replacing any handler of the root logger. Warnings (``warnings.warn``) become records of
    logger ``py.warnings``; the libraries of :data:`QUIET_LOGGERS` log WARNING and above; in
    ``json``, an uncaught exception is logged (logger ``parley``, level CRITICAL) instead of
    printed as a bare traceback."""
    # Fields no format here uses, which logging would otherwise gather for every record (the
    # logging HOWTO's "Optimization"): the caller's file and line, thread, process names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    if log_format == "json":
        sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("parley").critical("uncaught exception", exc_info=(kind, value, traceback))
