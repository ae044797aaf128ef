"""Rows of the message tree and of runs, and content records, to and from domain messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from parley.domain.models import (
    Citation,
    CitationSource,
    Message,
    MessageStatus,
    Role,
    StopReason,
    ToolCall,
    ToolKind,
)
from parley.storage.content.base import MessageContent

__all__ = [
    "RunRecord",
    "citation_values",
    "content_of",
    "message_from",
    "outcome_values",
    "run_from",
    "run_values",
    "tree_values",
]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The ``runs`` row of a reply: who started it, on which branch, which process runs it."""

    id: str  # the assistant message id
    session_id: str
    branch_id: str
    user_id: str
    replica_id: str | None
    background: bool
    last_sequence_number: int
    create_time: datetime


def tree_values(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "session_id": m.session_id,
        "parent_id": m.parent_id,
        "depth": m.depth,
        "role": m.role.value,
        "status": m.status.value,
        "stop_reason": m.stop_reason.value,
        "model": m.model,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        # Empty → NULL so that the unique (session_id, request_id) index ignores it.
        "request_id": m.request_id or None,
        "time_to_first_token_s": m.time_to_first_token_s,
        "create_time": m.create_time,
        "speech_duration_s": m.speech_duration_s,
        "tool_call_id": m.tool_call_id or None,
        "is_error": m.is_error,
        "run_id": m.run_id or None,
        "time_to_first_audio_s": m.time_to_first_audio_s,
        "generation_duration_s": m.generation_duration_s,
        "transcription_duration_s": m.transcription_duration_s,
        "voice_to_voice_latency_s": m.voice_to_voice_latency_s,
    }


def outcome_values(m: Message) -> dict[str, Any]:
    return {
        "status": m.status.value,
        "stop_reason": m.stop_reason.value,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "time_to_first_token_s": m.time_to_first_token_s,
        "speech_duration_s": m.speech_duration_s,
        "time_to_first_audio_s": m.time_to_first_audio_s,
        "generation_duration_s": m.generation_duration_s,
        "voice_to_voice_latency_s": m.voice_to_voice_latency_s,
    }


def message_from(row: RowMapping, content: MessageContent | None) -> Message:
    c = content or MessageContent(text="", error_message="content missing")
    return Message(
        id=row["id"],
        session_id=row["session_id"],
        parent_id=row["parent_id"],
        depth=row["depth"],
        role=Role(row["role"]),
        text=c.text,
        status=MessageStatus(row["status"]),
        stop_reason=StopReason(row["stop_reason"]),
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        create_time=row["create_time"],
        transcript_language=c.transcript_language,
        audio_duration_s=c.audio_duration_s,
        request_id=row["request_id"] or "",
        time_to_first_token_s=row["time_to_first_token_s"],
        error_message=c.error_message,
        speech_duration_s=row["speech_duration_s"],
        tool_calls=tuple(_tool_call(call) for call in c.tool_calls),
        tool_call_id=row["tool_call_id"] or "",
        is_error=bool(row["is_error"]),
        run_id=row["run_id"] or "",
        time_to_first_audio_s=row["time_to_first_audio_s"],
        generation_duration_s=row["generation_duration_s"],
        transcription_duration_s=row["transcription_duration_s"],
        voice_to_voice_latency_s=row["voice_to_voice_latency_s"],
        citations=tuple(_citation(cited) for cited in c.citations),
    )


def _tool_call(call: Mapping[str, Any]) -> ToolCall:
    return ToolCall(
        str(call["id"]),
        str(call["name"]),
        str(call["arguments"]),
        ToolKind(call.get("kind", ToolKind.UNKNOWN.value)),
        bool(call.get("require_approval", False)),
    )


def _citation(citation: Mapping[str, Any]) -> Citation:
    return Citation(
        str(citation["text"]),
        int(citation["start_index"]),
        int(citation["end_index"]),
        tuple(
            CitationSource(
                str(s["text"]),
                str(s.get("location", "")),
                str(s.get("location_type", "")),
                {str(k): str(v) for k, v in (s.get("metadata") or {}).items()},
            )
            for s in citation.get("sources") or ()
        ),
    )


def citation_values(citation: Citation) -> dict[str, Any]:
    """The JSON shape of a citation in ``MessageContent.citations`` (see ``content/base.py``)."""
    return {
        "text": citation.text,
        "start_index": citation.start_index,
        "end_index": citation.end_index,
        "sources": [
            {
                "text": s.text,
                "location": s.location,
                "location_type": s.location_type,
                "metadata": dict(s.metadata),
            }
            for s in citation.sources
        ],
    }


def content_of(m: Message) -> MessageContent:
    calls = tuple(
        {
            "id": c.id,
            "name": c.name,
            "arguments": c.arguments,
            "kind": c.kind.value,
            "require_approval": c.require_approval,
        }
        for c in m.tool_calls
    )
    citations = tuple(citation_values(c) for c in m.citations)
    return MessageContent(
        m.text, m.transcript_language, m.audio_duration_s, m.error_message, calls, citations
    )


def run_from(row: RowMapping) -> RunRecord:
    return RunRecord(
        id=row["id"],
        session_id=row["session_id"],
        branch_id=row["branch_id"],
        user_id=row["user_id"],
        replica_id=row["replica_id"],
        background=row["background"],
        last_sequence_number=row["last_sequence_number"],
        create_time=row["create_time"],
    )


def run_values(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "session_id": run.session_id,
        "branch_id": run.branch_id,
        "user_id": run.user_id,
        "replica_id": run.replica_id,
        "background": run.background,
        "last_sequence_number": run.last_sequence_number,
        "create_time": run.create_time,
    }
