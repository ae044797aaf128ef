"""Live voice: one ``ChatService.Converse`` call (a bidirectional stream) as an object.

::

    async with parley.converse(session.name) as talk:
        async def speak() -> None:
            await talk.send_wav("question.wav")   # 20 ms frames at real-time pace, then silence
            ...                                    # send_playback() marks while playing
            await talk.close_send()
        speaking = asyncio.create_task(speak())
        async for event in talk:                   # ConverseEvent: speech_started, transcript, ...
            ...

The server detects turns itself (voice activity detection; a turn ends after 0.5 s of silence),
answers each with ``chat_event``\\ s as ``SendVoiceMessage`` streams them, and ends the stream
after the last reply once :meth:`Conversation.close_send` was called. See docs/api.md,
"Live voice", for every event, limit and error.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, BinaryIO

import grpc
from parley_proto.v1 import chat_service_pb2

from parley_client.audio import FRAME_SECONDS, WavFile, paced
from parley_client.errors import ParleyError, error_from_rpc

__all__ = ["Conversation", "OpenCall"]

#: Opens the call (the client's channel, token and deadline); see ``ParleyClient.converse``.
OpenCall = Callable[[], Awaitable["grpc.aio.StreamStreamCall[Any, Any]"]]


class Conversation:
    """One Converse call: send audio and playback marks, iterate the server's events.

    Made by :meth:`ParleyClient.converse`; use it as an async context manager (or call
    :meth:`start` and :meth:`aclose`). Leaving the ``async with`` block before the stream ended
    cancels the call (the server then cancels a reply being generated, like any foreground
    reply whose client left).

    Sending (:meth:`send_audio`, :meth:`send_playback`, :meth:`send_wav`) and reading (``async
    for event in conversation``) go on at the same time, from different tasks. Each send waits
    for flow control, not for an answer. Failures raise :class:`~parley_client.errors.ParleyError`
    subclasses, from whichever side meets them first: ``NotFoundError`` (a session or branch that
    is absent or another user's), ``InvalidArgumentError`` (``CONVERSE_CONFIG_REQUIRED``,
    ``AUDIO_FRAME_TOO_LARGE``, ``CORRUPT_AUDIO``, ``INVALID_FIELD``, ``UNSUPPORTED_LANGUAGE``),
    ``ResourceExhaustedError`` (``AUDIO_TOO_FAST``, a quota), ``UnimplementedError`` (a server
    without live voice) ...
    """

    def __init__(self, open_call: OpenCall, config: chat_service_pb2.ConverseConfig) -> None:
        self.config = config
        self._open_call = open_call
        self._call: grpc.aio.StreamStreamCall[Any, Any] | None = None
        self._write_lock = asyncio.Lock()
        self._send_closed = False

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Conversation:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open the call and send the config. Idempotent."""
        if self._call is not None:
            return
        self._call = await self._open_call()
        await self._write(chat_service_pb2.ConverseRequest(config=self.config))

    async def aclose(self) -> None:
        """Cancel the call if it is still going (no-op once it ended)."""
        if self._call is not None and not self._call.done():
            self._call.cancel()

    @property
    def sending(self) -> bool:
        """Whether audio and marks can still be sent (started, not closed, the call going on)."""
        return self._call is not None and not self._send_closed and not self._call.done()

    # --- sending ---------------------------------------------------------------------------------

    async def send_audio(self, frame: bytes) -> None:
        """Send one frame as it is recorded: 16 kHz mono PCM16 little-endian (an even number of
        bytes; 640 for 20 ms) or one raw Opus packet, as the config's ``input_format`` says; at
        most 32,768 bytes. Send about real time: the server refuses audio faster than 2x real
        time beyond a 2 s burst (``ResourceExhaustedError``, ``AUDIO_TOO_FAST``)."""
        await self._write(chat_service_pb2.ConverseRequest(audio=frame))

    async def send_playback(self, message: str, played_s: float) -> None:
        """Report that ``played_s`` seconds of reply ``message``'s audio (``sessions/{s}/messages/{m}``,
        from ``message_accepted.assistant_message``) have been played, from its start. Send one
        every few hundred ms while playing: when the user speaks over a reply, the stored reply
        keeps only the sentences that ended within the last mark (no mark: the server takes the
        audio as played in real time from its first chunk)."""
        if played_s < 0:
            raise ValueError("played_s must not be negative")
        mark = chat_service_pb2.Playback(message=message)
        mark.played_duration.FromNanoseconds(round(played_s * 1e9))
        await self._write(chat_service_pb2.ConverseRequest(playback=mark))

    async def send_wav(
        self,
        source: str | os.PathLike[str] | BinaryIO | WavFile,
        *,
        trailing_silence_s: float = 1.0,
        frame_seconds: float = FRAME_SECONDS,
    ) -> float:
        """Stream a PCM WAV file as if it were being recorded: converted to 16 kHz mono PCM16
        (``parley_client.audio``), in frames of ``frame_seconds`` at real-time pace, then
        ``trailing_silence_s`` of silence so the server's turn detection (0.5 s of silence by
        default) ends the turn. Does not close the sending side. Needs a PCM16 config (the
        default ``input_format``). Returns the seconds of audio sent (silence included).

        Raises:
            OSError, WavError: the file cannot be read, or is not a PCM WAV file (before
                anything is sent).
            ValueError: the conversation's input format is Opus.
        """
        if self.config.input_format == chat_service_pb2.INPUT_AUDIO_FORMAT_OPUS:
            raise ValueError("send_wav sends PCM16: open the conversation with the PCM16 input format")
        wav = source if isinstance(source, WavFile) else WavFile(source)
        sent = 0.0
        try:
            frames = wav.frames(frame_seconds=frame_seconds, trailing_silence_s=trailing_silence_s)
            async for frame in paced(frames, frame_seconds=frame_seconds):
                await self.send_audio(frame)
                sent += len(frame) / 32_000
        finally:
            if wav is not source:
                wav.close()
        return sent

    async def close_send(self) -> None:
        """Close the sending side: a turn in progress ends there, and the server ends the stream
        after its reply. Idempotent; later sends raise ``RuntimeError``."""
        call = self._started()
        async with self._write_lock:
            if self._send_closed:
                return
            self._send_closed = True
            try:
                await call.done_writing()
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None

    # --- reading ---------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[chat_service_pb2.ConverseEvent]:
        return self.events()

    async def events(self) -> AsyncIterator[chat_service_pb2.ConverseEvent]:
        """The server's ``ConverseEvent``\\ s until the stream ends (call once)."""
        call = self._started()
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    # --- plumbing --------------------------------------------------------------------------------

    def _started(self) -> grpc.aio.StreamStreamCall[Any, Any]:
        if self._call is None:
            raise RuntimeError("the conversation is not started: use `async with` or await start()")
        return self._call

    async def _write(self, request: chat_service_pb2.ConverseRequest) -> None:
        call = self._started()
        async with self._write_lock:  # one write at a time (audio and marks from any task)
            if self._send_closed:
                raise RuntimeError("the sending side of the conversation is closed")
            if call.done():
                raise await _ended(call)
            try:
                await call.write(request)
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            except asyncio.InvalidStateError:  # the call ended while this write waited
                raise await _ended(call) from None


async def _ended(call: grpc.aio.StreamStreamCall[Any, Any]) -> Exception:
    """What to raise for a write to a call that has ended: its error, if it failed."""
    code = await call.code()
    if code == grpc.StatusCode.OK:
        return RuntimeError("the conversation has ended")
    failed = grpc.aio.AioRpcError(
        code,
        await call.initial_metadata(),
        await call.trailing_metadata(),
        await call.details(),
        "",
    )
    error: ParleyError = error_from_rpc(failed)
    return error
