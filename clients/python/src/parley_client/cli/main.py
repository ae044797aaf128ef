"""The ``parley`` command: accounts, agents, sessions and an interactive chat.

::

    parley register                       # asks for a username and a password
    parley login                          # saves tokens in ~/.config/parley/credentials.json
    parley agents create "Guide" --instructions "You are a concise guide."
    parley sessions create agents/…
    parley chat                           # a new session with your newest agent; /help inside

The server is ``--server``, else ``$PARLEY_SERVER``, else the server of the last login, else
``localhost:50051``. Passwords are prompted for; scripts can pipe one with ``--password-stdin`` or
set ``PARLEY_PASSWORD``. ``--json`` prints resources as JSON (proto3 JSON mapping).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage
from parley_proto.v1 import chat_service_pb2

from parley_client import __version__
from parley_client.cli.store import CredentialStore, Login
from parley_client.client import DEFAULT_SERVER, ParleyClient
from parley_client.errors import ParleyError, UnauthenticatedError

__all__ = ["CliError", "Context", "main", "resource_name"]

DESCRIPTION = """\
Talk to a Parley server from the terminal.

examples:
  parley register                    asks for a username and a password
  parley login                       saves tokens for this server in your config directory
  parley agents create Guide --instructions "You are a concise guide."
  parley sessions create AGENT
  parley chat                        a new session with your newest agent (/help inside)

The server is --server, else $PARLEY_SERVER, else the server of the last login, else
localhost:50051. Passwords are prompted for; scripts can pipe one with --password-stdin or set
$PARLEY_PASSWORD."""


class CliError(Exception):
    """A usage problem reported as ``parley: <message>`` with exit status 2."""


def resource_name(collection: str, value: str) -> str:
    """``agents/ID`` from ``ID`` or ``agents/ID`` (and likewise for sessions)."""
    value = value.strip()
    return value if value.startswith(f"{collection}/") else f"{collection}/{value}"


@dataclass
class Context:
    """What every command needs: the server, the credential store, the output style."""

    server: str
    store: CredentialStore
    json: bool = False
    out: TextIO = sys.stdout

    def client(self, *, auth: bool = True) -> ParleyClient:
        """A client for the server, with the saved login (required when ``auth``); refreshed
        tokens are saved back (refresh tokens are single-use)."""
        login = self.store.get(self.server)
        if auth and login is None:
            raise CliError(f"not logged in to {self.server}: run `parley login`")
        return ParleyClient(
            self.server,
            tokens=login.tokens if login else None,
            on_tokens=lambda tokens: self.store.update_tokens(self.server, tokens),
        )

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def emit(self, resources: Sequence[ProtoMessage], line: Callable[[Any], str]) -> None:
        """Print resources as JSON (``--json``) or one line each."""
        if self.json:
            docs = [MessageToDict(r) for r in resources]
            self.print(json.dumps(docs if len(docs) != 1 else docs[0], indent=2, ensure_ascii=False))
            return
        for resource in resources:
            self.print(line(resource))


# --- credentials -------------------------------------------------------------------------------


def _password(args: argparse.Namespace, *, confirm: bool = False) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if env := os.environ.get("PARLEY_PASSWORD"):
        return env
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password (again): ") != password:
        raise CliError("the passwords do not match")
    return password


def _username(args: argparse.Namespace) -> str:
    if args.username:
        return str(args.username)
    if args.password_stdin:
        raise CliError("--username is required with --password-stdin")
    return input("Username: ").strip()


async def cmd_register(ctx: Context, args: argparse.Namespace) -> int:
    username = _username(args)
    password = _password(args, confirm=True)
    async with ctx.client(auth=False) as client:
        user = await client.register(username, password, display_name=args.display_name or "")
    ctx.print(f"registered {user.username} ({user.name}) on {ctx.server}; now run `parley login`")
    return 0


async def cmd_login(ctx: Context, args: argparse.Namespace) -> int:
    username = _username(args)
    password = _password(args)
    async with ctx.client(auth=False) as client:
        tokens = await client.login(username, password)
    ctx.store.put(ctx.server, Login(username, tokens))
    ctx.print(f"logged in to {ctx.server} as {username} (credentials saved to {ctx.store.path})")
    return 0


async def cmd_logout(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.store.get(ctx.server) is None:
        ctx.print(f"not logged in to {ctx.server}")
        return 0
    try:
        async with ctx.client() as client:
            await client.logout()
    except UnauthenticatedError:
        pass  # already revoked or expired: forgetting it is all that is left to do
    ctx.store.remove(ctx.server)
    ctx.print(f"logged out of {ctx.server}")
    return 0


async def cmd_whoami(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        user = await client.get_current_user()
    ctx.emit([user], lambda u: f"{u.username}\t{u.name}\t{ctx.server}")
    return 0


# --- agents ------------------------------------------------------------------------------------


def _agent_line(agent: Any) -> str:
    return f"{agent.name}\t{agent.display_name}\t{agent.model or 'default model'}"


async def cmd_agents_create(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        agent = await client.create_agent(
            args.display_name,
            instructions=args.instructions,
            model=args.model,
            temperature=args.temperature,
            max_output_tokens=args.max_output_tokens,
            voice=args.voice,
            language=args.language,
        )
    ctx.emit([agent], _agent_line)
    return 0


async def cmd_agents_list(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        agents = [agent async for agent in client.list_agents()]
    if ctx.json:
        ctx.print(json.dumps([MessageToDict(a) for a in agents], indent=2, ensure_ascii=False))
    elif not agents:
        ctx.print('no agents yet: `parley agents create "Name" --instructions "…"`')
    for agent in [] if ctx.json else agents:
        ctx.print(_agent_line(agent))
    return 0


async def cmd_agents_get(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        agent = await client.get_agent(resource_name("agents", args.agent))
    if ctx.json:
        ctx.emit([agent], _agent_line)
        return 0
    ctx.print(_agent_line(agent))
    if agent.instructions:
        ctx.print(f"instructions: {agent.instructions}")
    return 0


async def cmd_agents_delete(ctx: Context, args: argparse.Namespace) -> int:
    name = resource_name("agents", args.agent)
    async with ctx.client() as client:
        await client.delete_agent(name, force=args.force)
    ctx.print(f"deleted {name}")
    return 0


# --- sessions ----------------------------------------------------------------------------------


def _session_line(session: Any) -> str:
    return f"{session.name}\t{session.agent}\t{session.title}"


async def cmd_sessions_create(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        session = await client.create_session(resource_name("agents", args.agent), title=args.title)
    ctx.emit([session], _session_line)
    return 0


async def cmd_sessions_list(ctx: Context, args: argparse.Namespace) -> int:
    agent = resource_name("agents", args.agent) if args.agent else ""
    async with ctx.client() as client:
        sessions = [session async for session in client.list_sessions(agent=agent)]
    if ctx.json:
        ctx.print(json.dumps([MessageToDict(s) for s in sessions], indent=2, ensure_ascii=False))
        return 0
    if not sessions:
        ctx.print("no sessions yet: `parley sessions create AGENT` or `parley chat`")
    for session in sessions:
        ctx.print(_session_line(session))
    return 0


async def cmd_sessions_export(ctx: Context, args: argparse.Namespace) -> int:
    name = resource_name("sessions", args.session)
    async with ctx.client() as client:
        chunks = [chunk async for chunk in client.export_session(name)]
    if args.output in (None, "-"):
        sys.stdout.buffer.write(b"".join(chunks))
        sys.stdout.buffer.flush()
        return 0
    await asyncio.to_thread(Path(args.output).write_bytes, b"".join(chunks))
    ctx.print(f"exported {name} to {args.output}")
    return 0


async def cmd_sessions_import(ctx: Context, args: argparse.Namespace) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        data = await asyncio.to_thread(Path(args.file).read_bytes)
    agent = resource_name("agents", args.agent) if args.agent else ""
    async with ctx.client() as client:
        session = await client.import_session(data, agent=agent)
    ctx.emit([session], _session_line)
    return 0


async def cmd_sessions_archive(ctx: Context, args: argparse.Namespace) -> int:
    name = resource_name("sessions", args.session)
    async with ctx.client() as client:
        session = await client.archive_session(name)
    if ctx.json:
        ctx.emit([session], _session_line)
    else:
        ctx.print(f"archived {name} (reading its messages restores it)")
    return 0


async def cmd_sessions_delete(ctx: Context, args: argparse.Namespace) -> int:
    name = resource_name("sessions", args.session)
    async with ctx.client() as client:
        await client.delete_session(name)
    ctx.print(f"deleted {name}")
    return 0


def _message_name(value: str) -> str:
    if "/messages/" not in value:
        raise CliError(f"{value!r} is not a message name: expected sessions/SESSION/messages/MESSAGE")
    return value.strip()


async def cmd_messages_resume(ctx: Context, args: argparse.Namespace) -> int:
    """Follow a reply (live or finished) and print its text as it streams."""
    name = _message_name(args.message)
    async with ctx.client() as client:
        last = None
        async for event in client.resume_stream(name, starting_after=args.after):
            kind = event.WhichOneof("event")
            if kind == "text_delta":
                ctx.out.write(event.text_delta.text)
                ctx.out.flush()
            elif kind == "message_completed":
                last = event.message_completed.message
        ctx.print()
        if last is not None and ctx.json:
            ctx.emit([last], _message_line)
    return 0


async def cmd_messages_cancel(ctx: Context, args: argparse.Namespace) -> int:
    """Stop a reply being generated; print it as stored."""
    async with ctx.client() as client:
        message = await client.cancel_message(_message_name(args.message))
    ctx.emit([message], _message_line)
    return 0


def _message_line(message: Any) -> str:
    status = chat_service_pb2.Message.Status.Name(message.status).removeprefix("STATUS_").lower()
    return f"{message.name} {status}: {message.text}"


async def cmd_usage(ctx: Context, args: argparse.Namespace) -> int:
    """Tokens, audio and messages spent: yours, or an agent's, a session's or a branch's."""
    since = datetime.fromisoformat(args.since).replace(tzinfo=UTC) if args.since else None
    if since is None and args.today:
        since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with ctx.client() as client:
        usage = await client.get_usage(args.parent, start_time=since)
    if ctx.json:
        ctx.emit([usage], str)
        return 0
    audio_in = usage.audio_input_duration.ToTimedelta().total_seconds()
    audio_out = usage.audio_output_duration.ToTimedelta().total_seconds()
    ctx.print(f"{usage.parent}{' since ' + since.isoformat() if since else ''}")
    ctx.print(f"  tokens: {usage.input_tokens} in, {usage.output_tokens} out")
    ctx.print(f"  audio: {audio_in:.1f} s in, {audio_out:.1f} s out")
    ctx.print(
        f"  messages: {usage.message_count}; replies: {usage.completed_replies} complete, "
        f"{usage.incomplete_replies} incomplete, {usage.failed_replies} failed"
    )
    return 0


# --- parser ------------------------------------------------------------------------------------


def _add_credential_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", "-u", help="prompted for when absent")
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (else $PARLEY_PASSWORD, else a prompt)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``parley`` (each sub-command sets ``run``)."""
    parser = argparse.ArgumentParser(
        prog="parley", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server",
        "-s",
        help=f"server address, host:port or https://host (default: $PARLEY_SERVER, the last login's, "
        f"or {DEFAULT_SERVER})",
    )
    parser.add_argument("--json", action="store_true", help="print resources as JSON")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_account_commands(commands)
    _add_agent_commands(commands)
    _add_session_commands(commands)
    _add_message_commands(commands)
    _add_usage_command(commands)
    _add_chat_command(commands)
    _add_talk_command(commands)
    return parser


_Commands = Any  # argparse's _SubParsersAction, private


def _add_account_commands(commands: _Commands) -> None:
    p = commands.add_parser("register", help="create a user on the server")
    _add_credential_args(p)
    p.add_argument("--display-name", help="name shown to people (default: the username)")
    p.set_defaults(run=cmd_register)

    p = commands.add_parser("login", help="log in and save the tokens for this server")
    _add_credential_args(p)
    p.set_defaults(run=cmd_login)

    p = commands.add_parser("logout", help="revoke and forget this server's tokens")
    p.set_defaults(run=cmd_logout)

    p = commands.add_parser("whoami", help="the logged-in user")
    p.set_defaults(run=cmd_whoami)


def _add_agent_commands(commands: _Commands) -> None:
    agents = commands.add_parser("agents", help="create, list, show and delete agents")
    agent_commands = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    p = agent_commands.add_parser("create", help="create an agent")
    p.add_argument("display_name", metavar="DISPLAY_NAME")
    p.add_argument("--instructions", "-i", default="", help="system prompt")
    p.add_argument("--model", "-m", default="", help="model alias or provider/model (default: server's)")
    p.add_argument("--temperature", type=float, help="0 to 2 (default: the provider's)")
    p.add_argument("--max-output-tokens", type=int, default=0, help="reply length limit (default: server's)")
    p.add_argument("--voice", default="", help="voice for spoken replies")
    p.add_argument("--language", default="", choices=["", "en", "ar"], help="en, ar (default: automatic)")
    p.set_defaults(run=cmd_agents_create)
    p = agent_commands.add_parser("list", help="list your agents")
    p.set_defaults(run=cmd_agents_list)
    p = agent_commands.add_parser("get", help="show an agent")
    p.add_argument("agent", metavar="AGENT", help="agents/ID or ID")
    p.set_defaults(run=cmd_agents_get)
    p = agent_commands.add_parser("delete", help="delete an agent")
    p.add_argument("agent", metavar="AGENT", help="agents/ID or ID")
    p.add_argument("--force", action="store_true", help="also delete its sessions")
    p.set_defaults(run=cmd_agents_delete)


def _add_session_commands(commands: _Commands) -> None:
    sessions = commands.add_parser(
        "sessions", help="create, list, delete, export, import and archive sessions"
    )
    session_commands = sessions.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    p = session_commands.add_parser("create", help="open a session with an agent")
    p.add_argument("agent", metavar="AGENT", help="agents/ID or ID")
    p.add_argument("--title", "-t", default="", help="title shown to people")
    p.set_defaults(run=cmd_sessions_create)
    p = session_commands.add_parser("list", help="list your sessions, newest first")
    p.add_argument("--agent", help="only sessions with this agent")
    p.set_defaults(run=cmd_sessions_list)
    p = session_commands.add_parser("delete", help="delete a session with its messages")
    p.add_argument("session", metavar="SESSION", help="sessions/ID or ID")
    p.set_defaults(run=cmd_sessions_delete)
    p = session_commands.add_parser("export", help="write a session with every branch as JSON Lines")
    p.add_argument("session", metavar="SESSION", help="sessions/ID or ID")
    p.add_argument("--output", "-o", help="file to write (default: standard output)")
    p.set_defaults(run=cmd_sessions_export)
    p = session_commands.add_parser("import", help="a new session from an export file")
    p.add_argument("file", metavar="FILE", help="the export file, or - for standard input")
    p.add_argument("--agent", help="attach to this agent (default: a copy of the exported one)")
    p.set_defaults(run=cmd_sessions_import)
    p = session_commands.add_parser("archive", help="move a session's messages to the server's archive")
    p.add_argument("session", metavar="SESSION", help="sessions/ID or ID")
    p.set_defaults(run=cmd_sessions_archive)


def _add_message_commands(commands: _Commands) -> None:
    messages = commands.add_parser("messages", help="follow or stop a reply")
    message_commands = messages.add_subparsers(dest="messages_command", required=True, metavar="ACTION")
    p = message_commands.add_parser(
        "resume", help="stream a reply from where you left it (live while it is generated)"
    )
    p.add_argument("message", metavar="MESSAGE", help="sessions/ID/messages/ID of the reply")
    p.add_argument("--after", type=int, default=0, help="sequence number of the last event you saw")
    p.set_defaults(run=cmd_messages_resume)
    p = message_commands.add_parser("cancel", help="stop a reply being generated")
    p.add_argument("message", metavar="MESSAGE", help="sessions/ID/messages/ID of the reply")
    p.set_defaults(run=cmd_messages_cancel)


def _add_usage_command(commands: _Commands) -> None:
    p = commands.add_parser("usage", help="tokens, audio and messages spent")
    p.add_argument(
        "parent",
        nargs="?",
        default="users/me",
        metavar="PARENT",
        help="users/me (default), agents/ID, sessions/ID or sessions/ID/branches/ID",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--today", action="store_true", help="since midnight UTC (what quotas count)")
    when.add_argument("--since", metavar="DATE", help="since this date or time (ISO 8601, UTC)")
    p.set_defaults(run=cmd_usage)


def _add_chat_command(commands: _Commands) -> None:
    p = commands.add_parser(
        "chat",
        help="talk to an agent (interactive; /help inside)",
        description="Talk to an agent. Replies stream as they are written; Ctrl-C stops a reply, "
        "/quit (or Ctrl-D) leaves. Without SESSION a new session is opened with --agent, or with "
        "your newest agent (one is created if you have none).",
    )
    p.add_argument("session", nargs="?", metavar="SESSION", help="sessions/ID or ID to continue")
    p.add_argument("--agent", "-a", help="agent of a new session (agents/ID or ID)")
    p.add_argument("--message", "-m", help="send this one message, print the reply and exit")
    p.add_argument("--voice", metavar="FILE", help="send this recording, print the reply and exit")
    p.add_argument("--language", default="", help="language spoken in --voice (en, ar; default: detect)")
    p.add_argument("--save-audio", metavar="FILE", help="write the spoken reply of --voice to FILE (MP3)")
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="after each reply, print its timings (time to first token and audio, transcription, total)",
    )
    p.set_defaults(run=None, chat=True)


async def _talk(ctx: Context, args: argparse.Namespace) -> int:
    from parley_client.cli.talk import cmd_talk  # it imports this module

    return await cmd_talk(ctx, args)


def _add_talk_command(commands: _Commands) -> None:
    p = commands.add_parser(
        "talk",
        help="a spoken conversation (live voice) from a WAV file",
        description="Stream a PCM WAV file to an agent as if it were being recorded (live voice, "
        "ChatService.Converse), print what the server heard and the reply as it streams, and write "
        "the reply audio to --out. Reply audio counts as played as it arrives. Without --session a "
        "new session is opened with --agent, or with your newest agent. Exit status: 0 every turn "
        "got a reply; 1 the server refused, heard no speech, or a reply failed; 2 a file that "
        "cannot be read or is not a PCM WAV file.",
    )
    p.add_argument("--file", "-f", required=True, metavar="FILE", help="the question, a PCM WAV file")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--session", metavar="SESSION", help="sessions/ID or ID to continue")
    target.add_argument("--agent", "-a", metavar="AGENT", help="agent of a new session (agents/ID or ID)")
    p.add_argument(
        "--language", default="", choices=["", "en", "ar"], help="language spoken (default: detect)"
    )
    p.add_argument("--out", "-o", metavar="FILE", help="write the spoken reply to FILE (WAV)")
    p.add_argument(
        "--verbose", "-v", action="store_true", help="print speech detection and each reply's timings"
    )
    p.set_defaults(run=_talk)


def _server(args: argparse.Namespace, store: CredentialStore) -> str:
    return str(args.server or os.environ.get("PARLEY_SERVER") or store.default_server() or DEFAULT_SERVER)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``parley``; returns the exit status (0 ok, 1 the server refused, 2 usage, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    store = CredentialStore()
    ctx = Context(server=_server(args, store), store=store, json=args.json)
    try:
        if getattr(args, "chat", False):
            from parley_client.cli.chat import run_chat

            return run_chat(ctx, args)
        run: Callable[[Context, argparse.Namespace], Coroutine[Any, Any, int]] = args.run
        return asyncio.run(run(ctx, args))
    except CliError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    except ParleyError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        if exc.reason in {"TOKEN_EXPIRED", "INVALID_TOKEN", "TOKEN_REVOKED", "REFRESH_TOKEN_REUSED"}:
            print(f"parley: log in again: `parley --server {ctx.server} login`", file=sys.stderr)
        elif exc.reason == "AGENT_HAS_SESSIONS":
            print("parley: `parley agents delete --force AGENT` deletes them too", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
