"""ChatService servicer: streams follow the reply's run; each method is one domain call."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import chat_service_pb2_grpc, common_pb2

from parley.api.converse import converse
from parley.api.convert import audio_chunk_to_proto, chat_event_to_proto, message_to_proto, output_format
from parley.api.convert_tools import tool_inputs
from parley.auth.interceptor import current_principal
from parley.domain.chat import ChatEngine
from parley.domain.live.voice import LiveVoice
from parley.domain.names import parse_message, parse_session
from parley.domain.pagination import page_request
from parley.domain.replies import Replies
from parley.domain.voice import Speech
from parley.runs.events import Failed
from parley.runs.manager import Subscription

__all__ = ["ChatServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def _deadline(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


async def _stream(opening: Awaitable[Subscription]) -> AsyncIterator[pb.ChatEvent]:
    """The events of the run ``opening`` subscribes to, as ``ChatEvent``s. After an ``error``
    event the call ends with the same status (raised here, mapped by the request handlers).
    Leaving early (the client went away) closes the subscription, which cancels a non-background
    run left without readers."""
    subscription = await opening
    async with contextlib.aclosing(subscription):
        async for item in subscription:
            yield chat_event_to_proto(item)
            if isinstance(item.event, Failed):
                raise item.event.error


class ChatServicer(chat_service_pb2_grpc.ChatServiceServicer):
    def __init__(self, chat: ChatEngine, replies: Replies, speech: Speech, live: LiveVoice) -> None:
        self._chat = chat
        self._replies = replies
        self._speech = speech
        self._live = live

    def Converse(
        self, request_iterator: AsyncIterator[pb.ConverseRequest], context: Context
    ) -> AsyncIterator[pb.ConverseEvent]:
        return converse(self._live, request_iterator, context)

    def SendMessage(self, request: pb.SendMessageRequest, context: Context) -> AsyncIterator[pb.ChatEvent]:
        return _stream(
            self._chat.send(
                current_principal(),
                parse_session(request.session, "session"),
                request.text,
                branch=request.branch,
                request_id=request.request_id,
                background=request.background,
                deadline=_deadline(context),
            )
        )

    def SendVoiceMessage(
        self, request: pb.SendVoiceMessageRequest, context: Context
    ) -> AsyncIterator[pb.ChatEvent]:
        return _stream(
            self._speech.send_voice(
                current_principal(),
                parse_session(request.session, "session"),
                request.audio,
                language=request.language,
                output_format=output_format(request.output_format, "output_format"),
                branch=request.branch,
                request_id=request.request_id,
                background=request.background,
                deadline=_deadline(context),
            )
        )

    def RegenerateMessage(
        self, request: pb.RegenerateMessageRequest, context: Context
    ) -> AsyncIterator[pb.ChatEvent]:
        session_id, message_id = parse_message(request.name)
        return _stream(
            self._chat.regenerate(
                current_principal(),
                session_id,
                message_id,
                background=request.background,
                deadline=_deadline(context),
            )
        )

    def ResumeStream(self, request: pb.ResumeStreamRequest, context: Context) -> AsyncIterator[pb.ChatEvent]:
        session_id, message_id = parse_message(request.name)
        return _stream(
            self._replies.resume(
                current_principal().user_id,
                session_id,
                message_id,
                request.starting_after,
                deadline=_deadline(context),
            )
        )

    def SubmitToolOutputs(
        self, request: pb.SubmitToolOutputsRequest, context: Context
    ) -> AsyncIterator[pb.ChatEvent]:
        session_id, message_id = parse_message(request.name)
        return _stream(
            self._replies.submit(
                current_principal().user_id,
                session_id,
                message_id,
                tool_inputs(request),
                deadline=_deadline(context),
            )
        )

    async def CancelMessage(
        self, request: pb.CancelMessageRequest, context: Context
    ) -> pb.CancelMessageResponse:
        session_id, message_id = parse_message(request.name)
        message = await self._replies.cancel(current_principal().user_id, session_id, message_id)
        return pb.CancelMessageResponse(message=message_to_proto(message))

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        session_id = parse_session(request.parent, "parent")
        page = page_request(
            request.page_size, request.page_token, f"messages:{request.parent}:{request.branch}"
        )
        messages, token = await self._chat.list_messages(
            current_principal().user_id, session_id, request.branch, page
        )
        return pb.ListMessagesResponse(
            messages=[message_to_proto(m) for m in messages], next_page_token=token
        )

    async def GetMessage(self, request: pb.GetMessageRequest, context: Context) -> pb.GetMessageResponse:
        session_id, message_id = parse_message(request.name)
        message = await self._chat.get_message(current_principal().user_id, session_id, message_id)
        return pb.GetMessageResponse(message=message_to_proto(message))

    async def SynthesizeSpeech(
        self, request: pb.SynthesizeSpeechRequest, context: Context
    ) -> AsyncIterator[common_pb2.AudioChunk]:
        session_id, message_id = parse_message(request.name)
        chunks = self._speech.synthesize(
            current_principal().user_id,
            session_id,
            message_id,
            output_format=output_format(request.format, "format"),
            voice=request.voice,
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield audio_chunk_to_proto(chunk)
