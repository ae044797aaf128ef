"""The events of a run: what a reply's stream is made of, in the domain's terms.

A run's events, in order (docs/design.md, "Streams"): :class:`Accepted`, for voice
:class:`TranscriptReady`, :class:`Delta`\\* interleaved with :class:`AudioReady`\\* (voice),
:class:`UsageReport`, then exactly one terminal event: :class:`Completed` (the reply is stored,
whole or cut short) or :class:`Failed` (the run ended in an error; the partial reply is stored).
Each event gets a sequence number, 1, 2, 3 ..., when it is appended to the run's event log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from parley.domain.errors import ParleyError
from parley.domain.models import Message, ToolCall

__all__ = [
    "Accepted",
    "ActionRequired",
    "AudioReady",
    "Completed",
    "Delta",
    "Failed",
    "RunEvent",
    "Sequenced",
    "ToolAnswered",
    "ToolCalled",
    "ToolInputs",
    "TranscriptReady",
    "UsageReport",
    "event_size",
    "is_terminal",
]


@dataclass(frozen=True, slots=True)
class Accepted:
    """The user message is stored; the reply ``assistant_message_id`` is on ``branch_id``."""

    user_message: Message
    assistant_message_id: str
    branch_id: str


@dataclass(frozen=True, slots=True)
class TranscriptReady:
    """What speech-to-text heard (voice sends). ``duration_s``: seconds of audio."""

    text: str
    language: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class Delta:
    """The next piece of the reply text (whole UTF-8 characters)."""

    text: str


@dataclass(frozen=True, slots=True)
class AudioReady:
    """A piece of the spoken reply: encoded bytes of ``format`` at ``sample_rate_hz`` Hz.
    ``text`` is the sentence it starts speaking (empty for the trailing flush) and ``duration_s``
    the seconds of speech of that sentence (0 with no text). The ``data`` of a run's chunks,
    joined in order, is one audio file."""

    data: bytes
    format: str
    sample_rate_hz: int
    segment_index: int
    text: str = ""
    language: str = ""
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Token counts of the reply: prompt tokens in, generated tokens out."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Completed:
    """The reply is stored (status COMPLETE, or INCOMPLETE/FAILED when cut short)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """The model called a tool (in assistant message ``message_id`` of ``session_id``)."""

    session_id: str
    message_id: str
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolAnswered:
    """A tool call's result, as the model sees it, stored as tool message ``message_id``."""

    session_id: str
    tool_call_id: str
    output: str
    is_error: bool
    message_id: str


@dataclass(frozen=True, slots=True)
class ActionRequired:
    """The run waits for the client: outputs of ``tool_outputs`` (client tools) and decisions on
    ``approvals``, sent for assistant message ``message_id`` before ``expire_time``. Streams end
    after this event while the run waits; the run's own event log goes on when it resumes."""

    session_id: str
    message_id: str
    tool_outputs: tuple[ToolCall, ...]
    approvals: tuple[ToolCall, ...]
    expire_time: datetime


@dataclass(frozen=True, slots=True)
class ToolInputs:
    """What a waiting run is sent: ``outputs`` by call id (output, is_error) and ``approvals``
    by call id (approved, reason)."""

    outputs: Mapping[str, tuple[str, bool]]
    approvals: Mapping[str, tuple[bool, str]]


@dataclass(frozen=True, slots=True)
class Failed:
    """The run ended in ``error``; the reply is stored INCOMPLETE/FAILED with stop reason ERROR."""

    error: ParleyError


RunEvent = (
    Accepted
    | TranscriptReady
    | Delta
    | AudioReady
    | ToolCalled
    | ToolAnswered
    | ActionRequired
    | UsageReport
    | Completed
    | Failed
)


@dataclass(frozen=True, slots=True)
class Sequenced:
    """An event with its position in the run's stream (1, 2, 3 ...), stable across resumes."""

    sequence_number: int
    event: RunEvent


def is_terminal(event: RunEvent) -> bool:
    """Whether ``event`` ends its run's stream."""
    return isinstance(event, Completed | Failed)


#: Fixed per-event overhead counted by :func:`event_size` (object headers, list slot).
EVENT_OVERHEAD_BYTES = 200


def event_size(event: RunEvent) -> int:
    """Approximate bytes an event keeps in memory: its text and audio plus a fixed overhead."""
    if isinstance(event, Delta):
        return EVENT_OVERHEAD_BYTES + len(event.text) * 4
    if isinstance(event, AudioReady):
        return EVENT_OVERHEAD_BYTES + len(event.data) + len(event.text) * 4
    if isinstance(event, TranscriptReady):
        return EVENT_OVERHEAD_BYTES + len(event.text) * 4
    if isinstance(event, ToolCalled):
        return EVENT_OVERHEAD_BYTES + len(event.call.arguments) * 4
    if isinstance(event, ToolAnswered):
        return EVENT_OVERHEAD_BYTES + len(event.output) * 4
    if isinstance(event, ActionRequired):
        return EVENT_OVERHEAD_BYTES + sum(
            len(c.arguments) * 4 for c in (*event.tool_outputs, *event.approvals)
        )
    if isinstance(event, Accepted | Completed):
        message = event.user_message if isinstance(event, Accepted) else event.message
        return EVENT_OVERHEAD_BYTES * 4 + len(message.text) * 4
    return EVENT_OVERHEAD_BYTES
