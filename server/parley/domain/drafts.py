"""The rows a send or regeneration writes before its run starts: the user message, the
IN_PROGRESS reply, the run and its usage record (docs/design.md, "Runs").

Pure constructors: nothing here reads or writes storage. A reply's id is also its run's id
(``run_id``), so the run, its events and its usage record are all keyed by the first message
of the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from parley.domain.models import Branch, Message, MessageStatus, Role, StopReason
from parley.domain.names import new_id
from parley.storage.messages import RunRecord
from parley.storage.sql.usage import UsageRecord

__all__ = ["Spoken", "reply_message", "run_record", "usage_record", "user_message"]


@dataclass(frozen=True, slots=True)
class Spoken:
    """A user message that was spoken: the language heard, the recording's length (s) and how
    long speech-to-text took on it (s; None: not measured)."""

    language: str
    duration_s: float
    transcription_s: float | None = None


def user_message(branch: Branch, text: str, request_id: str, spoken: Spoken | None, now: datetime) -> Message:
    """The user message appended at ``branch``'s head (depth = the branch's message count)."""
    return Message(
        id=new_id(),
        session_id=branch.session_id,
        parent_id=branch.head_id,
        depth=branch.message_count,
        role=Role.USER,
        text=text,
        status=MessageStatus.COMPLETE,
        stop_reason=StopReason.NONE,
        model="",
        input_tokens=0,
        output_tokens=0,
        create_time=now,
        request_id=request_id,
        transcript_language=spoken.language if spoken else "",
        audio_duration_s=spoken.duration_s if spoken else None,
        transcription_duration_s=spoken.transcription_s if spoken else None,
    )


def reply_message(user: Message, model: str, input_tokens: int, now: datetime) -> Message:
    """The IN_PROGRESS reply to ``user`` by ``model`` (qualified name); its run has its id."""
    reply_id = new_id()
    return Message(
        id=reply_id,
        session_id=user.session_id,
        parent_id=user.id,
        depth=user.depth + 1,
        role=Role.ASSISTANT,
        text="",
        status=MessageStatus.IN_PROGRESS,
        stop_reason=StopReason.NONE,
        model=model,
        input_tokens=input_tokens,
        output_tokens=0,
        create_time=now,
        run_id=reply_id,
    )


def run_record(reply: Message, owner_id: str, branch_id: str, replica_id: str, background: bool) -> RunRecord:
    """The run producing ``reply`` on ``branch_id``, owned by ``replica_id`` (docs: "Runs")."""
    return RunRecord(
        id=reply.id,
        session_id=reply.session_id,
        branch_id=branch_id,
        user_id=owner_id,
        replica_id=replica_id,
        background=background,
        last_sequence_number=0,
        create_time=reply.create_time,
    )


def usage_record(reply: Message, owner_id: str, agent_id: str, audio_s: float, messages: int) -> UsageRecord:
    """The usage row of ``reply``'s run: its input tokens now, output tokens when it ends;
    ``audio_s`` seconds of speech heard, ``messages`` rows written (user message and reply: 2)."""
    return UsageRecord(
        reply.id,
        owner_id,
        agent_id,
        reply.session_id,
        reply.create_time,
        reply.input_tokens,
        audio_s,
        messages,
    )
