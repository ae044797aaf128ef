"""``parley chat``: an interactive conversation in the terminal.

Replies are printed as they stream in. Ctrl-C while a reply streams cancels that reply (the server
keeps what was written, marked incomplete) and returns to the prompt; Ctrl-C at the prompt clears
the line; ``/quit`` or Ctrl-D leaves.

The REPL reads lines synchronously (``input()``, with readline editing when available) and runs
each request in one long-lived event loop (:class:`asyncio.Runner`), whose SIGINT handling turns
Ctrl-C into cancelling the running request: cancelling the gRPC call is what tells the server to
stop generating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from parley_proto.v1 import agent_service_pb2, chat_service_pb2, session_service_pb2

from parley_client.cli.main import CliError, Context, resource_name
from parley_client.client import ParleyClient
from parley_client.errors import ParleyError, UnimplementedError

__all__ = ["ChatRepl", "open_session", "run_chat", "timings"]

T = TypeVar("T")

HELP = """\
Type a message and press Enter; the reply streams in. Ctrl-C stops a reply.
  /history              the conversation on the current branch
  /branch [MESSAGE]     fork the conversation at MESSAGE (default: the newest message)
  /branches             list this session's branches
  /switch BRANCH        continue on BRANCH (an id such as `main`, or a full name)
  /regenerate           write the last reply again (on a new branch)
  /voice FILE           send a recording (wav, mp3, ogg, webm, m4a, flac)
  /help                 this text
  /quit                 leave (Ctrl-D works too)"""

_STATUS = {
    chat_service_pb2.Message.STATUS_INCOMPLETE: "incomplete",
    chat_service_pb2.Message.STATUS_FAILED: "failed",
}


def _excerpt(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _seconds(message: Any, field_name: str) -> float | None:
    """A Duration field of ``message`` in seconds; None when it is unset."""
    if not message.HasField(field_name):
        return None
    value = getattr(message, field_name)
    return float(value.seconds + value.nanos / 1e9)


#: What ``--verbose`` prints after a reply: (label, field, on the user message rather than the reply).
_TIMINGS = (
    ("ttft", "time_to_first_token", False),
    ("first audio", "time_to_first_audio", False),
    ("transcription", "transcription_duration", True),
    ("total", "generation_duration", False),
)


def timings(reply: chat_service_pb2.Message, user: chat_service_pb2.Message | None = None) -> str:
    """The latency of a turn as one line, e.g. ``ttft 0.31 s · first audio 0.90 s ·
    transcription 1.20 s · total 2.40 s``: the reply's time to first token and to first audio,
    the user message's transcription (voice), the reply's generation duration; unset ones are left
    out (empty string when none is set)."""
    parts = []
    for label, name, on_user in _TIMINGS:
        source = user if on_user else reply
        seconds = _seconds(source, name) if source is not None else None
        if seconds is not None:
            parts.append(f"{label} {seconds:.2f} s")
    return " · ".join(parts)


def not_available(feature: str) -> str:
    """What the REPL says when the server answers UNIMPLEMENTED."""
    return f"{feature} is not available on this server yet."


@dataclass
class ChatRepl:
    """One chat session in the terminal. ``run`` executes a coroutine in the REPL's event loop."""

    client: ParleyClient
    session: session_service_pb2.Session
    agent: agent_service_pb2.Agent
    run: Callable[[Coroutine[Any, Any, Any]], Any]
    out: Any = field(default_factory=lambda: sys.stdout)
    save_audio: Path | None = None
    #: Newest message of the conversation shown (for /branch) and newest reply (for /regenerate).
    last_message: str = ""
    last_reply: str = ""
    #: Reads an answer from the person (approvals, client tool outputs).
    ask: Callable[[str], str] = input
    #: What the last reply waits for, if it paused (client tools, approvals).
    pending: chat_service_pb2.RequiresAction | None = None
    #: Print each reply's timings (:func:`timings`) after it.
    verbose: bool = False
    _mid_line: bool = False

    # --- output --------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        if text:
            self._mid_line = not text.endswith("\n")

    def say(self, text: str) -> None:
        """Print a line, starting a new one if a reply was cut off mid-line."""
        self.write(("\n" if self._mid_line else "") + text + "\n")

    @property
    def label(self) -> str:
        return self.agent.display_name or "agent"

    # --- streaming ------------------------------------------------------------------------------

    async def stream_reply(self, events: AsyncIterator[chat_service_pb2.ChatEvent]) -> None:
        """Print a streamed reply: deltas as they come, then a newline."""
        started = False
        audio = bytearray()
        user: chat_service_pb2.Message | None = None
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "message_accepted":
                accepted = event.message_accepted
                user = accepted.user_message
                self.last_message = accepted.user_message.name
                self.last_reply = accepted.assistant_message
                if accepted.branch and accepted.branch != self.session.active_branch:
                    self.session.active_branch = accepted.branch
                    self.say(f"[on branch {accepted.branch.rsplit('/', 1)[-1]}]")
            elif kind == "transcript":
                language = f", {event.transcript.language}" if event.transcript.language else ""
                self.say(f"you (spoken{language}): {event.transcript.text}")
            elif kind == "text_delta":
                if not started:
                    self.write(f"{self.label}> ")
                    started = True
                self.write(event.text_delta.text)
            elif kind == "audio_chunk":
                audio.extend(event.audio_chunk.data)
            elif kind == "tool_call":
                call = event.tool_call
                self.say(f"[tool call {call.name}({call.arguments})]")
                started = False
            elif kind == "tool_result":
                result = event.tool_result
                marker = "error" if result.is_error else "result"
                self.say(f"[tool {marker}: {_excerpt(result.output)}]")
            elif kind == "requires_action":
                self.pending = event.requires_action
            elif kind == "message_completed":
                message = event.message_completed.message
                self.last_message = self.last_reply = message.name
                if not started:
                    self.write(f"{self.label}> {message.text}")
                self.write("\n")
                if message.status in _STATUS:
                    detail = message.error_message or chat_service_pb2.StopReason.Name(message.stop_reason)
                    self.say(f"[reply {_STATUS[message.status]}: {detail}]")
                if self.verbose and (line := timings(message, user)):
                    self.say(f"[{line}]")
        if audio:
            if self.save_audio is not None:
                self.save_audio.write_bytes(bytes(audio))
                self.say(f"[spoken reply: {len(audio)} bytes written to {self.save_audio}]")
            else:
                self.say(f"[spoken reply: {len(audio)} bytes; --save-audio FILE keeps it]")

    def reply(self, events: AsyncIterator[chat_service_pb2.ChatEvent], feature: str = "") -> None:
        """Run one streamed reply; Ctrl-C cancels it and returns to the prompt. A reply that waits
        for the person (client tools, approvals) asks, sends the answers and goes on."""
        while True:
            self.pending = None
            try:
                self.run(self.stream_reply(events))
            except KeyboardInterrupt:
                self.say("[reply cancelled]")
                return
            except UnimplementedError:
                self.say(not_available(feature or "This"))
                return
            except ParleyError as exc:
                self.say(f"error: {exc}")
                return
            if self.pending is None:
                return
            events = self._answer(self.pending)

    def _answer(self, action: chat_service_pb2.RequiresAction) -> AsyncIterator[chat_service_pb2.ChatEvent]:
        """Ask the person for each approval and client tool output the reply waits for."""
        approvals: dict[str, tuple[bool, str]] = {}
        for call in action.approvals:
            answer = self.ask(f"approve {call.name}({call.arguments})? [y/N] ").strip().lower()
            approved = answer in ("y", "yes")
            approvals[call.id] = (approved, "" if approved else "the user said no")
        outputs = {
            call.id: self.ask(f"output of {call.name}({call.arguments})> ") for call in action.tool_outputs
        }
        return self.client.submit_tool_outputs(action.message, outputs=outputs, approvals=approvals)

    def call(self, coro: Coroutine[Any, Any, T], feature: str) -> T | None:
        """Run one request; errors are printed, not raised."""
        try:
            return self.run(coro)  # type: ignore[no-any-return]
        except KeyboardInterrupt:
            self.say("[cancelled]")
        except UnimplementedError:
            self.say(not_available(feature))
        except ParleyError as exc:
            self.say(f"error: {exc}")
        return None

    # --- commands --------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.reply(self.client.send_message(self.session.name, text))

    def send_voice(self, path: str, language: str = "") -> None:
        try:
            audio = Path(path).expanduser().read_bytes()
        except OSError as exc:
            self.say(f"cannot read {path}: {exc.strerror or exc}")
            return
        events = self.client.send_voice_message(self.session.name, audio, language=language)
        self.reply(events, "Voice messages")

    def history(self) -> None:
        async def fetch() -> list[chat_service_pb2.Message]:
            return [m async for m in self.client.list_messages(self.session.name)]

        messages = self.call(fetch(), "History")
        if messages is None:
            return
        if not messages:
            self.say("(no messages yet)")
        for message in messages:
            who = "you" if message.role == chat_service_pb2.Message.ROLE_USER else self.label
            self.say(f"  {who}: {message.text}  [{message.name.rsplit('/', 1)[-1]}]")

    def branch(self, argument: str) -> None:
        message = argument or self.last_message
        if not message:
            self.say("nothing to branch from yet: send a message first")
            return
        if "/" not in message:
            message = f"{self.session.name}/messages/{message}"
        created = self.call(self.client.create_branch(self.session.name, message), "Branching")
        if created is not None:
            short = created.name.rsplit("/", 1)[-1]
            self.say(f"created branch {short} at {message.rsplit('/', 1)[-1]}; `/switch {short}` to use it")

    def branches(self) -> None:
        async def fetch() -> list[Any]:
            return [b async for b in self.client.list_branches(self.session.name)]

        found = self.call(fetch(), "Branching")
        for b in found or []:
            mark = "*" if b.active else " "
            short = b.name.rsplit("/", 1)[-1]
            label = f"  {b.display_name}" if b.display_name and b.display_name != short else ""
            self.say(f"{mark} {short}  ({b.message_count} messages){label}")

    def switch(self, argument: str) -> None:
        if not argument:
            self.say("usage: /switch BRANCH")
            return
        branch = argument if "/" in argument else f"{self.session.name}/branches/{argument}"
        session = self.call(self.client.set_active_branch(self.session.name, branch), "Branching")
        if session is not None:
            self.session = session
            self.last_message = self.last_reply = ""
            self.say(f"now on branch {branch.rsplit('/', 1)[-1]}")

    def regenerate(self) -> None:
        if not self.last_reply:
            self.say("no reply to regenerate yet")
            return
        self.reply(self.client.regenerate_message(self.last_reply), "Regenerating replies")

    def handle(self, line: str) -> bool:
        """Act on one input line; False means leave."""
        if not line.startswith("/"):
            self.send(line)
            return True
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        match command:
            case "/quit" | "/exit" | "/q":
                return False
            case "/help" | "/?":
                self.say(HELP)
            case "/history":
                self.history()
            case "/branch":
                self.branch(argument)
            case "/branches":
                self.branches()
            case "/switch":
                self.switch(argument)
            case "/regenerate":
                self.regenerate()
            case "/voice":
                if argument:
                    self.send_voice(argument)
                else:
                    self.say("usage: /voice FILE")
            case _:
                self.say(f"unknown command {command}; /help lists them")
        return True

    def loop(self, prompt: str = "you> ") -> int:
        """Read lines until /quit or end of input."""
        self.say(
            f"Chatting with {self.label} in {self.session.name}. "
            "Ctrl-C stops a reply; /help for commands, /quit to leave."
        )
        while True:
            try:
                line = input(prompt).strip()
            except EOFError:
                self.write("\n")
                return 0
            except KeyboardInterrupt:
                self.write("\n")
                continue
            if line and not self.handle(line):
                return 0


async def open_session(
    client: ParleyClient, args: argparse.Namespace, *, title: str = "parley chat"
) -> tuple[Any, Any, bool]:
    """The session to talk in (``args.session``, else a new one titled ``title`` with
    ``args.agent`` or the newest agent, created if there is none), its agent, and whether it is
    new."""
    if args.session:
        session = await client.get_session(resource_name("sessions", args.session))
        return session, await client.get_agent(session.agent), False
    if args.agent:
        agent = await client.get_agent(resource_name("agents", args.agent))
    else:
        agents = [a async for a in client.list_agents()]
        agent = (
            agents[-1]
            if agents
            else await client.create_agent("Assistant", instructions="You are a helpful, concise assistant.")
        )
    return await client.create_session(agent.name, title=title), agent, True


def run_chat(ctx: Context, args: argparse.Namespace) -> int:
    """``parley chat``: open the session, then one message (--message / --voice) or the REPL."""
    if args.message and args.voice:
        raise CliError("give --message or --voice, not both")
    with asyncio.Runner() as runner:
        client = ctx.client()
        try:
            session, agent, new = runner.run(open_session(client, args))
            repl = ChatRepl(
                client,
                session,
                agent,
                runner.run,
                out=ctx.out,
                save_audio=Path(args.save_audio) if args.save_audio else None,
                verbose=args.verbose,
            )
            if new:
                repl.say(f"new session {session.name} with {agent.display_name} ({agent.name})")
            if args.message:
                repl.send(args.message)
                return 0
            if args.voice:
                repl.send_voice(args.voice, args.language)
                return 0
            if sys.stdin.isatty():
                with contextlib.suppress(ImportError):  # not on every platform
                    import readline  # noqa: F401  (line editing and history for input())
            return repl.loop()
        finally:
            runner.run(client.close())
