"""Domain records: plain frozen dataclasses, independent of protobuf and SQL.

Times are timezone-aware UTC ``datetime`` values; durations are seconds (``float``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "Agent",
    "Branch",
    "Message",
    "MessageStatus",
    "Role",
    "Session",
    "StopReason",
    "User",
]


class Role(StrEnum):
    """Who wrote a message."""

    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(StrEnum):
    """Whether a message is whole."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    FAILED = "failed"


class StopReason(StrEnum):
    """Why generation stopped (the words of the Anthropic/OpenAI APIs where they exist)."""

    NONE = ""
    END_TURN = "end_turn"
    MAX_OUTPUT_TOKENS = "max_output_tokens"
    STOP_SEQUENCE = "stop_sequence"
    CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    ERROR = "error"
    SHUTDOWN = "shutdown"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    display_name: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    owner_id: str
    display_name: str
    instructions: str
    model: str
    temperature: float | None
    max_output_tokens: int
    voice: str
    language: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    owner_id: str
    agent_id: str
    title: str
    active_branch_id: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Branch:
    """A named pointer to a message (``head_id``); ``message_count`` is the head's depth + 1."""

    session_id: str
    id: str
    display_name: str
    head_id: str | None
    fork_point_id: str | None
    message_count: int
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Message:
    """A node of a session's message tree. ``depth`` is 0 for a first message."""

    id: str
    session_id: str
    parent_id: str | None
    depth: int
    role: Role
    text: str
    status: MessageStatus
    stop_reason: StopReason
    model: str
    input_tokens: int
    output_tokens: int
    create_time: datetime
    transcript_language: str = ""
    audio_duration_s: float | None = None
    request_id: str = ""
    time_to_first_token_s: float | None = None
    error_message: str = ""
