"""Run events as bytes, for a run event log shared by replicas (runs/redis_log.py).

An event is encoded as MessagePack (msgspec) ``[kind, payload]``: ``kind`` names the event
class, ``payload`` is the dataclass as msgspec encodes it (bytes stay binary, datetimes are
RFC 3339, enums their values). ``Failed`` carries its error as ``[code, message, reason,
metadata]``; the error is rebuilt as the ``ParleyError`` subclass of that gRPC code.

Only replicas of one release read each other's events: a field added to an event or a message
is read as its default by an older replica, and an unknown kind fails the read loudly
(``msgspec.ValidationError``) rather than being skipped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from parley.domain import errors
from parley.domain.errors import ParleyError, Reason
from parley.runs.events import (
    Accepted,
    ActionRequired,
    AudioReady,
    Completed,
    Delta,
    Failed,
    RunEvent,
    ToolAnswered,
    ToolCalled,
    TranscriptReady,
    UsageReport,
)

__all__ = ["decode_error", "decode_event", "encode_error", "encode_event"]

_KINDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        Accepted,
        TranscriptReady,
        Delta,
        AudioReady,
        ToolCalled,
        ToolAnswered,
        ActionRequired,
        UsageReport,
        Completed,
    )
}

#: ParleyError subclasses by gRPC code name.
_ERRORS: dict[str, type[ParleyError]] = {
    cls.code_name: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, ParleyError)
}

_encoder = msgspec.msgpack.Encoder()
_envelope = msgspec.msgpack.Decoder(tuple[str, msgspec.Raw])
_decoders = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in _KINDS.items()}
_error = msgspec.msgpack.Decoder(tuple[str, str, str, dict[str, str]])


def encode_error(error: ParleyError) -> bytes:
    """``error`` as bytes: its gRPC code, message, reason and metadata (no field violations)."""
    return _encoder.encode((error.code_name, error.message, error.reason.value, error.metadata))


def decode_error(data: bytes) -> ParleyError:
    """The error :func:`encode_error` encoded, as the ``ParleyError`` subclass of its code."""
    code, message, reason, metadata = _error.decode(data)
    return _ERRORS.get(code, ParleyError)(message, reason=Reason(reason), metadata=metadata)


def encode_event(event: RunEvent) -> bytes:
    """``event`` as bytes (see the module docstring)."""
    if isinstance(event, Failed):
        return _encoder.encode(("Failed", msgspec.Raw(encode_error(event.error))))
    return _encoder.encode((type(event).__name__, msgspec.Raw(_encoder.encode(event))))


def decode_event(data: bytes) -> RunEvent:
    """The event :func:`encode_event` encoded. Raises ``msgspec.DecodeError`` (or its subclass
    ``ValidationError``) for bytes that are not one."""
    kind, payload = _envelope.decode(data)
    if kind == "Failed":
        return Failed(decode_error(payload))
    decoder = _decoders.get(kind)
    if decoder is None:
        raise msgspec.ValidationError(f"unknown run event kind {kind!r}")
    event: RunEvent = decoder.decode(payload)
    return event
