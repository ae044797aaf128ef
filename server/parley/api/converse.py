"""ChatService.Converse: the client's requests to domain inputs, the conversation's events to
``ConverseEvent`` messages (docs/api.md, "Live voice")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from parley_proto.v1 import chat_service_pb2 as pb

from parley.api.convert import chat_event_to_proto, duration, message_to_proto, output_format
from parley.audio.frames import InputFormat
from parley.auth.interceptor import current_principal
from parley.domain.errors import InvalidArgument, Reason
from parley.domain.live.conversation import (
    AudioFrame,
    Heard,
    LiveEvent,
    LiveInput,
    PlaybackMark,
    ReplyEvent,
    ReplyInterrupted,
)
from parley.domain.live.listener import SpeechBegan, SpeechEnded
from parley.domain.live.voice import LiveConfig, LiveVoice
from parley.domain.names import parse_message, parse_session

__all__ = ["converse"]

#: Input formats by proto enum; unset means PCM16 (docs/api.md).
INPUT_FORMATS: dict[int, InputFormat] = {
    pb.INPUT_AUDIO_FORMAT_UNSPECIFIED: "pcm16",
    pb.INPUT_AUDIO_FORMAT_PCM16: "pcm16",
    pb.INPUT_AUDIO_FORMAT_OPUS: "opus",
}


def _config(request: pb.ConverseRequest | None) -> LiveConfig:
    if request is None or request.WhichOneof("request") != "config":
        raise InvalidArgument.field(
            "config",
            "the first request of a Converse stream must be a config",
            reason=Reason.CONVERSE_CONFIG_REQUIRED,
        )
    config = request.config
    input_format = INPUT_FORMATS.get(config.input_format)
    if input_format is None:
        raise InvalidArgument.field(
            "config.input_format", f"unknown input audio format {config.input_format}"
        )
    return LiveConfig(
        session_id=parse_session(config.session, "config.session"),
        branch=config.branch,
        input_format=input_format,
        output_format=(
            output_format(config.output_format, "config.output_format") if config.output_format else "pcm16"
        ),
        language=config.language,
    )


async def _inputs(requests: AsyncIterator[pb.ConverseRequest], session_id: str) -> AsyncIterator[LiveInput]:
    async for request in requests:
        kind = request.WhichOneof("request")
        if kind == "audio":
            yield AudioFrame(request.audio)
        elif kind == "playback":
            mark_session, message_id = parse_message(request.playback.message, "playback.message")
            if mark_session != session_id:
                raise InvalidArgument.field("playback.message", "not a message of the conversation's session")
            yield PlaybackMark(message_id, request.playback.played_duration.ToTimedelta().total_seconds())
        elif kind == "config":
            raise InvalidArgument.field(
                "config", "a Converse stream takes one config, first", reason=Reason.CONVERSE_CONFIG_REQUIRED
            )
        else:
            raise InvalidArgument.field("request", "empty request: send audio or playback")


def event_to_proto(event: LiveEvent, session_id: str) -> pb.ConverseEvent:
    """A conversation event as a ``ConverseEvent``."""
    out = pb.ConverseEvent()
    if isinstance(event, SpeechBegan):
        out.speech_started.audio_start.CopyFrom(duration(event.audio_start_s))
    elif isinstance(event, SpeechEnded):
        out.speech_stopped.audio_end.CopyFrom(duration(event.audio_end_s))
    elif isinstance(event, Heard):
        out.transcript.text = event.text
        out.transcript.language = event.language
        out.transcript.audio_duration.CopyFrom(duration(event.duration_s))
    elif isinstance(event, ReplyEvent):
        out.chat_event.CopyFrom(chat_event_to_proto(event.item))
    elif isinstance(event, ReplyInterrupted):
        out.interrupted.message.CopyFrom(message_to_proto(event.message))
        out.interrupted.played_duration.CopyFrom(duration(event.played_s))
    return out


async def converse(
    live: LiveVoice, requests: AsyncIterator[pb.ConverseRequest], context: Any
) -> AsyncIterator[pb.ConverseEvent]:
    """The Converse call: a config first, then frames and marks in, events out."""
    first = await anext(requests, None)
    config = _config(first)
    conversation = await live.open(current_principal(), config)
    events = conversation.run(_inputs(requests, config.session_id))
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            yield event_to_proto(event, config.session_id)
