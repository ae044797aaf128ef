"""``parley talk --file question.wav``: a spoken conversation (``ChatService.Converse``) from a
WAV file.

The file is streamed as if it were being recorded: 16 kHz mono PCM16 in 20 ms frames at
real-time pace (``parley_client.audio``), then :data:`TRAILING_SILENCE_S` of silence so the
server's turn detection ends the turn. What the server heard and the reply text are printed as
they stream; the reply audio (PCM16) is written to ``--out`` as a WAV file. A file with pauses
of more than the server's turn silence (0.5 s) is several turns, each answered in order; every
reply goes into the one ``--out`` file.

**Playback marks.** The command has no loudspeaker: reply audio counts as played the moment it
arrives (written to ``--out``, or dropped without it), so after every audio chunk it reports all
of that reply's audio received so far as played. Nothing is spoken over a reply (the file is the
microphone, and it has ended), so the stored reply is the whole reply. The sending side stays
open until every turn heard has its reply, so the marks of the last reply reach the server too.

Exit status: 0 when every turn heard got a reply; 1 when the server refused (the message says
why: ``NOT_FOUND`` for a session that does not exist ...), heard no speech, or a reply failed;
2 for a file that cannot be read or is not a PCM WAV file (before anything is sent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from parley_proto.v1 import chat_service_pb2, common_pb2

from parley_client.audio import WavError, WavFile, convert_pcm16, write_wav
from parley_client.cli.chat import open_session, timings
from parley_client.cli.main import CliError, Context
from parley_client.live import Conversation

__all__ = ["TRAILING_SILENCE_S", "Talk", "cmd_talk"]

#: Silence streamed after the file (s): twice the server's default end-of-turn silence (0.5 s).
TRAILING_SILENCE_S = 1.0


@dataclass
class Talk:
    """One ``parley talk`` run: prints events, collects reply audio, sends playback marks."""

    ctx: Context
    label: str
    verbose: bool = False
    #: Reply audio so far, PCM16 at ``rate_hz`` (0 before the first chunk).
    audio: bytearray = field(default_factory=bytearray)
    rate_hz: int = 0
    replies: int = 0
    failed: int = 0
    #: Turns heard (speech_started) and turns answered (a reply ended, or nothing recognized).
    _heard: int = field(default=0, init=False)
    _answered: int = field(default=0, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _reply: str = field(default="", init=False)
    _played_s: float = field(default=0.0, init=False)
    _user: chat_service_pb2.Message | None = field(default=None, init=False)
    _mid_line: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._idle.set()

    def write(self, text: str) -> None:
        self.ctx.out.write(text)
        self.ctx.out.flush()
        if text:
            self._mid_line = not text.endswith("\n")

    def say(self, text: str) -> None:
        self.write(("\n" if self._mid_line else "") + text + "\n")

    async def run(self, conversation: Conversation, wav: WavFile) -> None:
        """Stream ``wav`` and print the events until the server ends the stream; the first
        error of either side is raised (and the other side stopped)."""
        reading = asyncio.create_task(self._read(conversation))
        speaking = asyncio.create_task(self._speak(conversation, wav))
        try:
            pending = {reading, speaking}
            while reading in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (error := task.exception()) is not None:
                        raise error
        finally:
            for task in (reading, speaking):
                task.cancel()
            await asyncio.gather(reading, speaking, return_exceptions=True)

    async def _read(self, conversation: Conversation) -> None:
        async for event in conversation:
            await self._on(event, conversation)

    async def _speak(self, conversation: Conversation, wav: WavFile) -> None:
        await conversation.send_wav(wav, trailing_silence_s=TRAILING_SILENCE_S)
        await self._idle.wait()  # every turn heard has its reply: its marks are sent
        await conversation.close_send()

    def _turn_ended(self) -> None:
        self._answered += 1
        if self._answered >= self._heard:
            self._idle.set()

    async def _on(self, event: chat_service_pb2.ConverseEvent, conversation: Conversation) -> None:
        kind = event.WhichOneof("event")
        if kind == "speech_started":
            self._heard += 1
            self._idle.clear()
            if self.verbose:
                self.say(f"[speech started at {_s(event.speech_started.audio_start):.2f} s]")
        elif kind == "speech_stopped":
            if self.verbose:
                self.say(f"[speech stopped at {_s(event.speech_stopped.audio_end):.2f} s]")
        elif kind == "transcript":
            heard = event.transcript
            if heard.text:
                self.say(f"you (spoken{', ' + heard.language if heard.language else ''}): {heard.text}")
            else:
                self.say("[nothing recognized in that turn]")
                self._turn_ended()
        elif kind == "chat_event":
            await self._on_reply(event.chat_event, conversation)
        elif kind == "interrupted":
            self.say(f"[reply interrupted after {_s(event.interrupted.played_duration):.2f} s]")
            self._turn_ended()

    async def _on_reply(self, event: chat_service_pb2.ChatEvent, conversation: Conversation) -> None:
        kind = event.WhichOneof("event")
        if kind == "message_accepted":
            self._reply, self._played_s = event.message_accepted.assistant_message, 0.0
            self._user = event.message_accepted.user_message
            self.write(f"{self.label}> ")
        elif kind == "text_delta":
            self.write(event.text_delta.text)
        elif kind == "audio_chunk":
            chunk = event.audio_chunk
            self.rate_hz = self.rate_hz or chunk.sample_rate_hz
            self.audio.extend(convert_pcm16(chunk.data, chunk.sample_rate_hz, self.rate_hz))
            self._played_s += len(chunk.data) / 2 / chunk.sample_rate_hz
            await self._mark(conversation)
        elif kind == "message_completed":
            message = event.message_completed.message
            self.write("\n")
            self.replies += 1
            if message.status != chat_service_pb2.Message.STATUS_COMPLETE:
                stop = chat_service_pb2.StopReason.Name(message.stop_reason)
                self.say(f"[reply {chat_service_pb2.Message.Status.Name(message.status)}: {stop}]")
            if self.verbose:
                line = " · ".join(
                    part
                    for part in (
                        timings(message, self._user),
                        f"voice to voice {_s(message.voice_to_voice_latency):.2f} s",
                    )
                    if part
                )
                self.say(f"[{line}]")
            self._turn_ended()
        elif kind == "error":
            self.say(f"[reply failed: {event.error.message}]")
            self.failed += 1
            self._turn_ended()

    async def _mark(self, conversation: Conversation) -> None:
        """Report the reply's audio received so far as played (see the module docstring)."""
        if not conversation.sending:
            return
        with contextlib.suppress(RuntimeError):  # the sending side closed meanwhile
            await conversation.send_playback(self._reply, self._played_s)


def _s(duration: Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def _wav(path: str) -> WavFile:
    try:
        return WavFile(Path(path).expanduser())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except WavError as exc:
        raise CliError(str(exc)) from None


def _save(path: str, pcm16: bytes, rate_hz: int) -> None:
    try:
        write_wav(Path(path).expanduser(), pcm16, rate_hz)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


async def cmd_talk(ctx: Context, args: argparse.Namespace) -> int:
    """``parley talk``: see the module docstring."""
    with _wav(args.file) as wav:
        async with ctx.client() as client:
            session, agent, new = await open_session(client, args, title="parley talk")
            if new:
                ctx.print(f"new session {session.name} with {agent.display_name} ({agent.name})")
            talk = Talk(ctx, agent.display_name or "agent", verbose=args.verbose)
            conversation = client.converse(
                session.name, language=args.language, output_format=common_pb2.AUDIO_FORMAT_PCM16
            )
            async with conversation:
                await talk.run(conversation, wav)
    if talk.audio:
        seconds = len(talk.audio) / 2 / talk.rate_hz
        if args.out:
            await asyncio.to_thread(_save, args.out, bytes(talk.audio), talk.rate_hz)
            talk.say(f"[reply audio: {seconds:.2f} s written to {args.out}]")
        else:
            talk.say(f"[reply audio: {seconds:.2f} s; --out FILE keeps it]")
    if talk.replies == 0 and talk.failed == 0:
        print(f"parley: no speech was recognized in {args.file}", file=sys.stderr)
        return 1
    return 1 if talk.failed else 0
