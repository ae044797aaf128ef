"""Conversions between domain records and ``parley_proto.v1`` messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from parley_proto.v1 import (
    agent_service_pb2,
    auth_service_pb2,
    branch_service_pb2,
    chat_service_pb2,
    common_pb2,
    session_service_pb2,
)

from parley.api.convert_tools import (
    mcp_servers_from_proto,
    mcp_servers_to_proto,
    tool_call_to_proto,
    tools_from_proto,
    tools_to_proto,
)
from parley.api.interceptors import request_id_var, status_proto
from parley.audio.encode import OutputFormat
from parley.domain.agents import AgentFields
from parley.domain.errors import InvalidArgument
from parley.domain.models import (
    Agent,
    Branch,
    Citation,
    Message,
    MessageStatus,
    Quota,
    Role,
    Session,
    StopReason,
    User,
    UserRole,
)
from parley.domain.names import agent_name, branch_name, message_name, session_name, user_name
from parley.runs import events as run_events

__all__ = [
    "OUTPUT_FORMATS",
    "agent_changes",
    "agent_fields",
    "agent_to_proto",
    "audio_chunk_to_proto",
    "branch_to_proto",
    "chat_event_to_proto",
    "citation_to_proto",
    "duration",
    "mask_paths",
    "message_to_proto",
    "output_format",
    "quota_changes",
    "quota_to_proto",
    "session_title_change",
    "session_to_proto",
    "timestamp",
    "user_role",
    "user_to_proto",
]

_ROLE = {
    Role.USER: chat_service_pb2.Message.ROLE_USER,
    Role.ASSISTANT: chat_service_pb2.Message.ROLE_ASSISTANT,
    Role.TOOL: chat_service_pb2.Message.ROLE_TOOL,
}
_STATUS = {
    MessageStatus.COMPLETE: chat_service_pb2.Message.STATUS_COMPLETE,
    MessageStatus.INCOMPLETE: chat_service_pb2.Message.STATUS_INCOMPLETE,
    MessageStatus.FAILED: chat_service_pb2.Message.STATUS_FAILED,
    MessageStatus.IN_PROGRESS: chat_service_pb2.Message.STATUS_IN_PROGRESS,
    MessageStatus.REQUIRES_ACTION: chat_service_pb2.Message.STATUS_REQUIRES_ACTION,
}
_STOP: dict[StopReason, chat_service_pb2.StopReason.ValueType] = {
    reason: getattr(chat_service_pb2, f"STOP_REASON_{reason.name}")
    for reason in StopReason
    if reason is not StopReason.NONE
}


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


_USER_ROLE = {
    UserRole.USER: auth_service_pb2.User.ROLE_USER,
    UserRole.ADMIN: auth_service_pb2.User.ROLE_ADMIN,
}


def quota_to_proto(quota: Quota) -> auth_service_pb2.Quota:
    return auth_service_pb2.Quota(
        input_tokens_per_day=quota.input_tokens_per_day,
        output_tokens_per_day=quota.output_tokens_per_day,
        audio_seconds_per_day=quota.audio_seconds_per_day,
        max_concurrent_replies=quota.max_concurrent_replies,
    )


def quota_changes(
    quota: auth_service_pb2.Quota, current: Quota, paths: Sequence[str], prefix: str
) -> Quota | None:
    """``current`` with the fields of ``quota`` that ``paths`` name (``prefix`` replaces all four,
    ``prefix.field`` one); ``None`` when no path names the quota."""
    given = Quota(
        quota.input_tokens_per_day,
        quota.output_tokens_per_day,
        quota.audio_seconds_per_day,
        quota.max_concurrent_replies,
    )
    if prefix in paths:
        return given
    fields = [p.removeprefix(f"{prefix}.") for p in paths if p.startswith(f"{prefix}.")]
    if not fields:
        return None
    return replace(current, **{name: getattr(given, name) for name in fields})


def user_to_proto(user: User) -> auth_service_pb2.User:
    return auth_service_pb2.User(
        name=user_name(user.id),
        username=user.username,
        display_name=user.display_name,
        create_time=timestamp(user.create_time),
        update_time=timestamp(user.update_time),
        role=_USER_ROLE[user.role],
        disabled=user.disabled,
        quota=quota_to_proto(user.quota),
    )


def user_role(value: int, field: str) -> UserRole:
    """The domain role of a ``User.Role`` value; ``InvalidArgument`` for unset or unknown."""
    for role, number in _USER_ROLE.items():
        if number == value:
            return role
    raise InvalidArgument.field(field, "must be ROLE_USER or ROLE_ADMIN")


def mask_paths(mask: field_mask_pb2.FieldMask, allowed: Sequence[str]) -> list[str]:
    """The paths of ``mask`` (all of ``allowed`` when empty or ``*``); ``InvalidArgument``
    naming any path that is not in ``allowed``."""
    return _mask_paths(mask, allowed)


def agent_to_proto(agent: Agent) -> agent_service_pb2.Agent:
    msg = agent_service_pb2.Agent(
        name=agent_name(agent.id),
        display_name=agent.display_name,
        instructions=agent.instructions,
        model=agent.model,
        max_output_tokens=agent.max_output_tokens,
        voice=agent.voice,
        language=agent.language,
        create_time=timestamp(agent.create_time),
        update_time=timestamp(agent.update_time),
    )
    if agent.temperature is not None:
        msg.temperature = agent.temperature
    msg.tools.extend(tools_to_proto(agent.tools))
    msg.mcp_servers.extend(mcp_servers_to_proto(agent.mcp_servers))
    return msg


def agent_fields(agent: agent_service_pb2.Agent) -> AgentFields:
    return AgentFields(
        display_name=agent.display_name,
        instructions=agent.instructions,
        model=agent.model,
        temperature=agent.temperature if agent.HasField("temperature") else None,
        max_output_tokens=agent.max_output_tokens,
        voice=agent.voice,
        language=agent.language,
        tools=tools_from_proto(agent.tools),
        mcp_servers=mcp_servers_from_proto(agent.mcp_servers),
    )


def _mask_paths(mask: field_mask_pb2.FieldMask, allowed: Sequence[str]) -> list[str]:
    paths = list(mask.paths)
    if not paths or paths == ["*"]:
        return [p for p in allowed if "." not in p]
    unknown = [p for p in paths if p not in allowed]
    if unknown:
        raise InvalidArgument.field(
            "update_mask", f"cannot update {', '.join(unknown)}; updatable: {', '.join(allowed)}"
        )
    return paths


def agent_changes(
    agent: agent_service_pb2.Agent, mask: field_mask_pb2.FieldMask, allowed: Sequence[str]
) -> dict[str, Any]:
    """Field → new value for the paths in ``mask`` (all of ``allowed`` when empty or ``*``)."""
    fields = agent_fields(agent)
    return {path: getattr(fields, path) for path in _mask_paths(mask, allowed)}


def session_title_change(session: session_service_pb2.Session, mask: field_mask_pb2.FieldMask) -> str:
    _mask_paths(mask, ["title"])
    return session.title


def session_to_proto(session: Session) -> session_service_pb2.Session:
    return session_service_pb2.Session(
        name=session_name(session.id),
        agent=agent_name(session.agent_id),
        title=session.title,
        active_branch=branch_name(session.id, session.active_branch_id),
        create_time=timestamp(session.create_time),
        update_time=timestamp(session.update_time),
        archived=session.archive_time is not None,
        archive_time=timestamp(session.archive_time) if session.archive_time is not None else None,
    )


def branch_to_proto(branch: Branch, active_branch_id: str) -> branch_service_pb2.Branch:
    return branch_service_pb2.Branch(
        name=branch_name(branch.session_id, branch.id),
        display_name=branch.display_name,
        head=message_name(branch.session_id, branch.head_id) if branch.head_id else "",
        fork_point=message_name(branch.session_id, branch.fork_point_id) if branch.fork_point_id else "",
        message_count=branch.message_count,
        active=branch.id == active_branch_id,
        create_time=timestamp(branch.create_time),
        update_time=timestamp(branch.update_time),
    )


def message_to_proto(message: Message) -> chat_service_pb2.Message:
    msg = chat_service_pb2.Message(
        name=message_name(message.session_id, message.id),
        role=_ROLE[message.role],
        text=message.text,
        parent=message_name(message.session_id, message.parent_id) if message.parent_id else "",
        status=_STATUS[message.status],
        stop_reason=_STOP.get(message.stop_reason, chat_service_pb2.STOP_REASON_UNSPECIFIED),
        model=message.model,
        transcript_language=message.transcript_language,
        request_id=message.request_id,
        error_message=message.error_message,
        create_time=timestamp(message.create_time),
    )
    if message.role is Role.ASSISTANT:
        msg.usage.CopyFrom(
            common_pb2.Usage(
                input_tokens=message.input_tokens,
                output_tokens=message.output_tokens,
                total_tokens=message.input_tokens + message.output_tokens,
            )
        )
    if message.audio_duration_s is not None:
        msg.audio_duration.CopyFrom(duration(message.audio_duration_s))
    if message.time_to_first_token_s is not None:
        msg.time_to_first_token.CopyFrom(duration(message.time_to_first_token_s))
    if message.speech_duration_s is not None:
        msg.speech_duration.CopyFrom(duration(message.speech_duration_s))
    if message.time_to_first_audio_s is not None:
        msg.time_to_first_audio.CopyFrom(duration(message.time_to_first_audio_s))
    if message.generation_duration_s is not None:
        msg.generation_duration.CopyFrom(duration(message.generation_duration_s))
    if message.transcription_duration_s is not None:
        msg.transcription_duration.CopyFrom(duration(message.transcription_duration_s))
    if message.voice_to_voice_latency_s is not None:
        msg.voice_to_voice_latency.CopyFrom(duration(message.voice_to_voice_latency_s))
    msg.tool_calls.extend(tool_call_to_proto(c) for c in message.tool_calls)
    msg.tool_call_id = message.tool_call_id
    msg.is_error = message.is_error
    msg.citations.extend(citation_to_proto(c) for c in message.citations)
    return msg


def citation_to_proto(citation: Citation) -> chat_service_pb2.Citation:
    """A cited span of a message and its sources, offsets as the provider reported them."""
    return chat_service_pb2.Citation(
        text=citation.text,
        start_index=citation.start_index,
        end_index=citation.end_index,
        sources=[
            chat_service_pb2.CitationSource(
                text=s.text, location=s.location, location_type=s.location_type, metadata=dict(s.metadata)
            )
            for s in citation.sources
        ],
    )


_AUDIO_FORMAT = {
    "mp3": common_pb2.AUDIO_FORMAT_MP3,
    "opus": common_pb2.AUDIO_FORMAT_OPUS,
    "wav": common_pb2.AUDIO_FORMAT_WAV,
    "pcm16": common_pb2.AUDIO_FORMAT_PCM16,
}
#: Output formats by proto enum; unset means MP3 (docs/api.md).
OUTPUT_FORMATS: dict[int, OutputFormat] = {
    common_pb2.AUDIO_FORMAT_UNSPECIFIED: "mp3",
    common_pb2.AUDIO_FORMAT_MP3: "mp3",
    common_pb2.AUDIO_FORMAT_OPUS: "opus",
    common_pb2.AUDIO_FORMAT_WAV: "wav",
    common_pb2.AUDIO_FORMAT_PCM16: "pcm16",
}


def output_format(value: int, field: str) -> OutputFormat:
    """The encoder name for an ``AudioFormat`` value; ``InvalidArgument`` for an unknown number."""
    name = OUTPUT_FORMATS.get(value)
    if name is None:
        raise InvalidArgument.field(field, f"unknown audio format {value}")
    return name


def audio_chunk_to_proto(event: run_events.AudioReady) -> common_pb2.AudioChunk:
    chunk = common_pb2.AudioChunk(
        data=event.data,
        format=_AUDIO_FORMAT[event.format],
        sample_rate_hz=event.sample_rate_hz,
        segment_index=event.segment_index,
        text=event.text,
        language=event.language,
    )
    if event.text:
        chunk.duration.CopyFrom(duration(event.duration_s))
    return chunk


def chat_event_to_proto(item: run_events.Sequenced) -> chat_service_pb2.ChatEvent:
    """A run event with its sequence number as a ``ChatEvent``. A ``Failed`` event becomes
    ``error``: the ``google.rpc.Status`` the stream then ends with."""
    event = item.event
    out = chat_service_pb2.ChatEvent(sequence_number=item.sequence_number)
    if isinstance(event, run_events.Delta):
        out.text_delta.text = event.text
    elif isinstance(event, run_events.AudioReady):
        out.audio_chunk.CopyFrom(audio_chunk_to_proto(event))
    elif isinstance(event, run_events.Accepted):
        session_id = event.user_message.session_id
        out.message_accepted.CopyFrom(
            chat_service_pb2.MessageAccepted(
                user_message=message_to_proto(event.user_message),
                assistant_message=(
                    message_name(session_id, event.assistant_message_id) if event.assistant_message_id else ""
                ),
                branch=branch_name(session_id, event.branch_id) if event.branch_id else "",
            )
        )
    elif isinstance(event, run_events.TranscriptReady):
        out.transcript.CopyFrom(
            chat_service_pb2.Transcript(
                text=event.text, language=event.language, audio_duration=duration(event.duration_s)
            )
        )
    elif isinstance(event, run_events.UsageReport):
        out.usage.CopyFrom(
            common_pb2.Usage(
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                total_tokens=event.input_tokens + event.output_tokens,
            )
        )
    elif isinstance(event, run_events.Completed):
        out.message_completed.message.CopyFrom(message_to_proto(event.message))
    elif isinstance(event, run_events.ToolCalled):
        out.tool_call.CopyFrom(tool_call_to_proto(event.call))
    elif isinstance(event, run_events.ToolAnswered):
        out.tool_result.CopyFrom(
            chat_service_pb2.ToolResult(
                tool_call_id=event.tool_call_id,
                output=event.output,
                is_error=event.is_error,
                message=message_name(event.session_id, event.message_id),
            )
        )
    elif isinstance(event, run_events.ActionRequired):
        out.requires_action.CopyFrom(
            chat_service_pb2.RequiresAction(
                message=message_name(event.session_id, event.message_id),
                tool_outputs=[tool_call_to_proto(c) for c in event.tool_outputs],
                approvals=[tool_call_to_proto(c) for c in event.approvals],
                expire_time=timestamp(event.expire_time),
            )
        )
    else:
        out.error.CopyFrom(status_proto(event.error, request_id_var.get()))
    return out
