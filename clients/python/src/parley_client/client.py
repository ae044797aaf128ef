"""The async client: one object for every Parley service, over one gRPC channel.

::

    async with ParleyClient("localhost:50051") as parley:
        await parley.register("ada", "correct horse battery")
        await parley.login("ada", "correct horse battery")
        agent = await parley.create_agent("Guide", instructions="You are a concise guide.")
        session = await parley.create_session(agent.name)
        async for event in parley.send_message(session.name, "Hello!"):
            if event.HasField("text_delta"):
                print(event.text_delta.text, end="", flush=True)

Every method raises a :class:`~parley_client.errors.ParleyError` subclass when the call fails.
Calls that need a user send ``authorization: Bearer <access token>``; when the server answers
``UNAUTHENTICATED`` with reason ``TOKEN_EXPIRED``, the client exchanges its refresh token for a
new pair once (refresh tokens are single-use: concurrent calls share one refresh) and retries the
call. ``on_tokens`` hears of every new pair, so a caller can persist them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import field_mask_pb2, json_format
from parley_proto.v1 import (
    admin_service_pb2_grpc,
    agent_service_pb2,
    agent_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
    branch_service_pb2,
    branch_service_pb2_grpc,
    chat_service_pb2,
    chat_service_pb2_grpc,
    common_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
)

from parley_client.admin import AdminClient
from parley_client.errors import ParleyError, UnauthenticatedError, error_from_rpc
from parley_client.live import Conversation

__all__ = ["DEFAULT_SERVER", "ParleyClient", "Tokens", "channel_for"]

#: Where the client connects when neither ``target`` nor ``PARLEY_SERVER`` says otherwise.
DEFAULT_SERVER: Final = "localhost:50051"

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# 26 MiB: the server's receive limit (the 25 MB audio limit plus room for the other fields).
_MAX_MESSAGE_BYTES = 26 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token pair from ``CreateToken`` or ``RefreshToken``.

    ``expires_in`` and ``refresh_expires_in`` are lifetimes in seconds as of issue (defaults
    900 s and 30 days). The refresh token is single-use: after a refresh only the new pair works.
    """

    access_token: str
    refresh_token: str
    expires_in: int = 0
    refresh_expires_in: int = 0
    token_type: str = "Bearer"

    @classmethod
    def of(
        cls, reply: auth_service_pb2.CreateTokenResponse | auth_service_pb2.RefreshTokenResponse
    ) -> Tokens:
        """The pair of a ``CreateToken`` or ``RefreshToken`` response."""
        return cls(
            reply.access_token,
            reply.refresh_token,
            reply.expires_in,
            reply.refresh_expires_in,
            reply.token_type or "Bearer",
        )


def channel_for(target: str, *, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """An asyncio channel for ``target``.

    ``target`` is ``host:port`` (plaintext, for a local server or one behind a TLS-terminating
    proxy), ``http://host:port`` (the same) or ``https://host[:port]`` (TLS with the system's
    roots, port 443 by default). ``credentials`` forces TLS with those credentials.
    """
    options = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ]
    tls = credentials is not None
    if target.startswith("https://"):
        target, tls = target.removeprefix("https://").rstrip("/"), True
        if ":" not in target.rsplit("]", 1)[-1]:
            target += ":443"
    elif target.startswith("http://"):
        target = target.removeprefix("http://").rstrip("/")
    if tls:
        return grpc.aio.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)


class ParleyClient:
    """Async client of the Parley API (``parley.v1``).

    Args:
        target: server address (see :func:`channel_for`); default ``$PARLEY_SERVER`` or
            ``localhost:50051``.
        tokens: a token pair from an earlier login (e.g. a credentials file).
        on_tokens: called with every new pair (login, refresh) and with ``None`` on logout.
        channel: use this channel instead of opening one (the client will not close it).
        credentials: TLS credentials for the channel it opens.
        timeout: deadline of each unary call, seconds (``None``: no deadline).
        stream_timeout: deadline of each streamed reply, seconds (``None``: no deadline).

    Use it as an async context manager, or call :meth:`close`. The channel opens on first use, in
    the running event loop; use the client from that loop only.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        tokens: Tokens | None = None,
        on_tokens: Callable[[Tokens | None], None] | None = None,
        channel: grpc.aio.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 30.0,
        stream_timeout: float | None = None,
    ) -> None:
        self.target = target or os.environ.get("PARLEY_SERVER") or DEFAULT_SERVER
        self._tokens = tokens
        self._on_tokens = on_tokens
        self._channel = channel
        self._owns_channel = channel is None
        self._credentials = credentials
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._refresh_lock: asyncio.Lock | None = None
        self._stubs: _Stubs | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> ParleyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (if this client opened it)."""
        if self._channel is not None and self._owns_channel:
            await self._channel.close(None)
            self._channel = None
            self._stubs = None

    @property
    def tokens(self) -> Tokens | None:
        """The current token pair (``None`` before login)."""
        return self._tokens

    @tokens.setter
    def tokens(self, tokens: Tokens | None) -> None:
        self._tokens = tokens

    @property
    def _s(self) -> _Stubs:
        if self._stubs is None:
            if self._channel is None:
                self._channel = channel_for(self.target, credentials=self._credentials)
            self._stubs = _Stubs(self._channel)
        return self._stubs

    # --- auth ------------------------------------------------------------------------------------

    async def register(
        self, username: str, password: str, *, display_name: str = ""
    ) -> auth_service_pb2.User:
        """Create a user (``AuthService.CreateUser``). Does not log in.

        Raises:
            AlreadyExistsError: the username is taken.
            InvalidArgumentError: a bad username (3-32 of a-z 0-9 . _ -) or password (8-256 chars).
            PermissionDeniedError: registration is switched off on this server.
        """
        request = auth_service_pb2.CreateUserRequest(
            username=username, password=password, display_name=display_name
        )
        return (await self._unary(self._s.auth.CreateUser, request, auth=False)).user

    async def login(self, username: str, password: str) -> Tokens:
        """Exchange username and password for a token pair (``CreateToken``) and use it.

        Raises:
            UnauthenticatedError: wrong username or password.
        """
        request = auth_service_pb2.CreateTokenRequest(username=username, password=password)
        reply = await self._unary(self._s.auth.CreateToken, request, auth=False)
        return self._set_tokens(Tokens.of(reply))

    async def refresh(self) -> Tokens:
        """Exchange the refresh token for a new pair (``RefreshToken``) and use it.

        Calls made with an expired access token do this by themselves. The old refresh token stops
        working; presenting it again revokes the whole login.

        Raises:
            UnauthenticatedError: not logged in, or the refresh token was revoked or reused.
            InvalidArgumentError: the refresh token expired (reason ``TOKEN_EXPIRED``).
        """
        if self._tokens is None:
            raise _not_logged_in()
        request = auth_service_pb2.RefreshTokenRequest(refresh_token=self._tokens.refresh_token)
        reply = await self._unary(self._s.auth.RefreshToken, request, auth=False)
        return self._set_tokens(Tokens.of(reply))

    async def logout(self) -> None:
        """Revoke the login (``RevokeToken``: its refresh token and every access token issued from
        it stop working) and forget the tokens."""
        if self._tokens is None:
            return
        request = auth_service_pb2.RevokeTokenRequest(refresh_token=self._tokens.refresh_token)
        await self._unary(self._s.auth.RevokeToken, request)
        self._tokens = None
        if self._on_tokens is not None:
            self._on_tokens(None)

    async def get_current_user(self) -> auth_service_pb2.User:
        """The logged-in user (``GetCurrentUser``)."""
        request = auth_service_pb2.GetCurrentUserRequest()
        return (await self._unary(self._s.auth.GetCurrentUser, request)).user

    async def get_current_token(self) -> auth_service_pb2.GetCurrentTokenResponse:
        """Subject, id, issue and expiry times of the access token in use (``GetCurrentToken``)."""
        return await self._unary(self._s.auth.GetCurrentToken, auth_service_pb2.GetCurrentTokenRequest())

    # --- agents ----------------------------------------------------------------------------------

    async def create_agent(
        self,
        display_name: str,
        *,
        instructions: str = "",
        model: str = "",
        temperature: float | None = None,
        max_output_tokens: int = 0,
        voice: str = "",
        language: str = "",
        tools: Sequence[agent_service_pb2.Tool | Mapping[str, Any]] = (),
        mcp_servers: Sequence[agent_service_pb2.McpServer | Mapping[str, Any]] = (),
    ) -> agent_service_pb2.Agent:
        """Create an agent (``CreateAgent``).

        Args:
            display_name: 1 to 100 characters.
            instructions: the system prompt, up to 32,768 characters.
            model: a model alias (``local``, ``fast`` …) or ``provider/model``; empty: the server's
                default.
            temperature: 0 to 2; ``None``: the provider's default.
            max_output_tokens: reply length limit, tokens; 0: the server's default.
            voice: voice of spoken replies; empty: the language's default.
            language: ``en``, ``ar``, or empty for automatic.
            tools: ``Tool`` messages, or their JSON form (``{"name": "get_time", "client": {}}``,
                ``{"name": "w", "http": {"url": ...}, "parameters": {...}}``); needs a model that
                can call tools.
            mcp_servers: ``McpServer`` messages or their JSON form (``{"name", "url", ...}``).
        """
        agent = agent_service_pb2.Agent(
            display_name=display_name,
            instructions=instructions,
            model=model,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            voice=voice,
            language=language,
            tools=[_message(t, agent_service_pb2.Tool) for t in tools],
            mcp_servers=[_message(m, agent_service_pb2.McpServer) for m in mcp_servers],
        )
        request = agent_service_pb2.CreateAgentRequest(agent=agent)
        return (await self._unary(self._s.agents.CreateAgent, request)).agent

    async def get_agent(self, name: str) -> agent_service_pb2.Agent:
        """One of the user's agents, by name ``agents/{agent}``."""
        request = agent_service_pb2.GetAgentRequest(name=name)
        return (await self._unary(self._s.agents.GetAgent, request)).agent

    async def list_agents(self, *, page_size: int = 0) -> AsyncIterator[agent_service_pb2.Agent]:
        """The user's agents, oldest first, fetching pages of ``page_size`` (0: the server's 50)."""
        request = agent_service_pb2.ListAgentsRequest(page_size=page_size)
        async for agent in self._pages(self._s.agents.ListAgents, request, "agents"):
            yield agent

    async def update_agent(
        self,
        name: str,
        *,
        display_name: str | None = None,
        instructions: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        voice: str | None = None,
        language: str | None = None,
        tools: Sequence[agent_service_pb2.Tool | Mapping[str, Any]] | None = None,
        mcp_servers: Sequence[agent_service_pb2.McpServer | Mapping[str, Any]] | None = None,
    ) -> agent_service_pb2.Agent:
        """Change the given fields of an agent (``UpdateAgent`` with an update mask of exactly the
        arguments that are not ``None``). ``tools`` and ``mcp_servers`` replace the lists (send
        their headers again: they are secrets the server never returns)."""
        fields: dict[str, Any] = {
            "display_name": display_name,
            "instructions": instructions,
            "model": model,
            "temperature": temperature,
            "max_output_tokens": max_output_tokens,
            "voice": voice,
            "language": language,
            "tools": None if tools is None else [_message(t, agent_service_pb2.Tool) for t in tools],
            "mcp_servers": (
                None
                if mcp_servers is None
                else [_message(m, agent_service_pb2.McpServer) for m in mcp_servers]
            ),
        }
        changed = {key: value for key, value in fields.items() if value is not None}
        if not changed:
            return await self.get_agent(name)
        request = agent_service_pb2.UpdateAgentRequest(
            agent=agent_service_pb2.Agent(name=name, **changed),
            update_mask=field_mask_pb2.FieldMask(paths=sorted(changed)),
        )
        return (await self._unary(self._s.agents.UpdateAgent, request)).agent

    async def delete_agent(self, name: str, *, force: bool = False) -> None:
        """Delete an agent; with ``force`` also its sessions.

        Raises:
            FailedPreconditionError: it still has sessions and ``force`` is false.
        """
        request = agent_service_pb2.DeleteAgentRequest(name=name, force=force)
        await self._unary(self._s.agents.DeleteAgent, request)

    # --- sessions --------------------------------------------------------------------------------

    async def create_session(self, agent: str, *, title: str = "") -> session_service_pb2.Session:
        """Open a session with agent ``agents/{agent}`` (``CreateSession``); it starts on branch
        ``main``."""
        session = session_service_pb2.Session(agent=agent, title=title)
        request = session_service_pb2.CreateSessionRequest(session=session)
        return (await self._unary(self._s.sessions.CreateSession, request)).session

    async def get_session(self, name: str) -> session_service_pb2.Session:
        """One of the user's sessions, by name ``sessions/{session}``."""
        request = session_service_pb2.GetSessionRequest(name=name)
        return (await self._unary(self._s.sessions.GetSession, request)).session

    async def list_sessions(
        self, *, agent: str = "", page_size: int = 0
    ) -> AsyncIterator[session_service_pb2.Session]:
        """The user's sessions, newest first (only those with ``agent`` if given)."""
        request = session_service_pb2.ListSessionsRequest(page_size=page_size, agent=agent)
        async for session in self._pages(self._s.sessions.ListSessions, request, "sessions"):
            yield session

    async def update_session(self, name: str, *, title: str) -> session_service_pb2.Session:
        """Change a session's title (``UpdateSession``)."""
        request = session_service_pb2.UpdateSessionRequest(
            session=session_service_pb2.Session(name=name, title=title),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
        return (await self._unary(self._s.sessions.UpdateSession, request)).session

    async def delete_session(self, name: str) -> None:
        """Delete a session with its messages and branches."""
        request = session_service_pb2.DeleteSessionRequest(name=name)
        await self._unary(self._s.sessions.DeleteSession, request)

    async def export_session(self, name: str) -> AsyncIterator[bytes]:
        """The session's export file (JSON Lines, docs/export.md) in chunks of at most 64 KiB
        (``ExportSession``); joined, they are the file."""
        request = session_service_pb2.ExportSessionRequest(name=name)
        async for response in self._stream(lambda: self._s.sessions.ExportSession, request):
            yield response.data

    async def import_session(self, data: bytes, *, agent: str = "") -> session_service_pb2.Session:
        """A new session from an export file (``ImportSession``): new ids, the same tree and
        active branch; with ``agent`` attached to that agent, else to a new copy of the exported
        one.

        Raises:
            InvalidArgumentError: not a valid export; the message starts with ``line N:``.
            ResourceExhaustedError: the file is over the server's import limit.
        """
        request = session_service_pb2.ImportSessionRequest(data=data, agent=agent)
        return (await self._unary(self._s.sessions.ImportSession, request)).session

    async def archive_session(self, name: str) -> session_service_pb2.Session:
        """Move a session's message content to the server's archive (``ArchiveSession``); the
        session shows ``archived`` until its messages are next read, which restores it.

        Raises:
            FailedPreconditionError: a reply of the session is still being generated.
            UnavailableError: the archive cannot be reached.
        """
        request = session_service_pb2.ArchiveSessionRequest(name=name)
        return (await self._unary(self._s.sessions.ArchiveSession, request)).session

    # --- chat ------------------------------------------------------------------------------------

    def send_message(
        self, session: str, text: str, *, branch: str = "", request_id: str = "", background: bool = False
    ) -> AsyncIterator[chat_service_pb2.ChatEvent]:
        """Send a text message and stream the reply (``SendMessage``).

        Yields ``ChatEvent``s in order: ``message_accepted``, ``text_delta``…, ``usage``,
        ``message_completed`` (each with its ``sequence_number``). Stop iterating (or cancel the
        task) to leave: without ``background`` that cancels the reply (the server stores what was
        generated as INCOMPLETE); with it the reply goes on, and :meth:`resume_stream` follows it
        again from any sequence number. A failure after the first event arrives as an ``error``
        event, then raises.

        Args:
            session: ``sessions/{session}``.
            text: 1 to 32,768 characters.
            branch: ``sessions/{session}/branches/{branch}``; empty: the active branch.
            request_id: idempotency key (up to 128 characters): a repeat stores nothing new and
                streams the first send's reply.
            background: keep generating after this client goes away.
        """
        request = chat_service_pb2.SendMessageRequest(
            session=session, text=text, branch=branch, request_id=request_id, background=background
        )
        return self._stream(lambda: self._s.chat.SendMessage, request)

    def send_voice_message(
        self,
        session: str,
        audio: bytes,
        *,
        language: str = "",
        output_format: common_pb2.AudioFormat.ValueType = common_pb2.AUDIO_FORMAT_UNSPECIFIED,
        branch: str = "",
        request_id: str = "",
        background: bool = False,
    ) -> AsyncIterator[chat_service_pb2.ChatEvent]:
        """Send a recording (WAV, MP3, Ogg, WebM, M4A or FLAC; up to 25 MB and 10 minutes) and
        stream the reply (``SendVoiceMessage``): ``message_accepted``, ``transcript``, then text
        deltas interleaved with ``audio_chunk``s (MP3 unless ``output_format`` says otherwise).

        Raises:
            UnimplementedError: the server does not offer voice yet.
        """
        request = chat_service_pb2.SendVoiceMessageRequest(
            session=session,
            audio=audio,
            language=language,
            output_format=output_format,
            branch=branch,
            request_id=request_id,
            background=background,
        )
        return self._stream(lambda: self._s.chat.SendVoiceMessage, request)

    def regenerate_message(
        self, name: str, *, background: bool = False
    ) -> AsyncIterator[chat_service_pb2.ChatEvent]:
        """Generate a new reply in place of assistant message ``name``, on a new branch that
        becomes active (``RegenerateMessage``); events as for :meth:`send_message`."""
        request = chat_service_pb2.RegenerateMessageRequest(name=name, background=background)
        return self._stream(lambda: self._s.chat.RegenerateMessage, request)

    def resume_stream(
        self, name: str, *, starting_after: int = 0
    ) -> AsyncIterator[chat_service_pb2.ChatEvent]:
        """Follow the reply ``name`` (``sessions/{s}/messages/{m}``, an assistant message) from
        the event after ``starting_after`` (``ResumeStream``): the events so far, then live ones
        until it ends. The same event has the same ``sequence_number`` in every stream, text and
        audio alike, so a client that saw N events resumes with ``starting_after=N``."""
        request = chat_service_pb2.ResumeStreamRequest(name=name, starting_after=starting_after)
        return self._stream(lambda: self._s.chat.ResumeStream, request)

    def submit_tool_outputs(
        self,
        name: str,
        *,
        outputs: Mapping[str, str | tuple[str, bool]] | None = None,
        approvals: Mapping[str, bool | tuple[bool, str]] | None = None,
    ) -> AsyncIterator[chat_service_pb2.ChatEvent]:
        """Answer a reply that waits (a ``requires_action`` event; the message's status is
        ``STATUS_REQUIRES_ACTION``) and stream the rest of it (``SubmitToolOutputs``).

        Args:
            name: the waiting assistant message (``requires_action.message``).
            outputs: tool call id → output text, or (output, is_error), for every call in
                ``requires_action.tool_outputs`` (client tools).
            approvals: tool call id → approved, or (approved, reason), for every call in
                ``requires_action.approvals``.

        Raises:
            InvalidArgumentError: an id it does not wait for, or a pending one left out
                (``UNKNOWN_TOOL_CALL``).
            FailedPreconditionError: the reply is not waiting (``REPLY_NOT_WAITING``).
        """
        request = chat_service_pb2.SubmitToolOutputsRequest(name=name)
        for call_id, value in (outputs or {}).items():
            output, is_error = value if isinstance(value, tuple) else (value, False)
            request.tool_outputs.add(tool_call_id=call_id, output=output, is_error=is_error)
        for call_id, decision in (approvals or {}).items():
            approved, reason = decision if isinstance(decision, tuple) else (decision, "")
            request.approvals.add(tool_call_id=call_id, approved=approved, reason=reason)
        return self._stream(lambda: self._s.chat.SubmitToolOutputs, request)

    def converse(
        self,
        session: str,
        *,
        branch: str = "",
        input_format: chat_service_pb2.InputAudioFormat.ValueType = chat_service_pb2.INPUT_AUDIO_FORMAT_PCM16,
        output_format: common_pb2.AudioFormat.ValueType = common_pb2.AUDIO_FORMAT_PCM16,
        language: str = "",
    ) -> Conversation:
        """A live spoken conversation (``Converse``, a bidirectional stream; gRPC only): use the
        result as ``async with client.converse(session) as talk:``, send audio with
        ``talk.send_audio(frame)`` or ``talk.send_wav(path)``, playback marks with
        ``talk.send_playback(message, seconds)``, read ``ConverseEvent``s with ``async for event
        in talk``, and ``await talk.close_send()`` when done (see :mod:`parley_client.live`).

        Args:
            session: ``sessions/{session}``.
            branch: ``sessions/{session}/branches/{branch}``; empty: the active branch.
            input_format: ``INPUT_AUDIO_FORMAT_PCM16`` (16 kHz mono 16-bit little-endian frames)
                or ``INPUT_AUDIO_FORMAT_OPUS`` (one raw Opus packet per frame).
            output_format: the reply audio: ``AUDIO_FORMAT_PCM16`` (raw mono samples at each
                chunk's ``sample_rate_hz``), MP3, Opus or WAV.
            language: ``en``, ``ar``, or empty to detect it.

        Opening checks the access token first (``GetCurrentToken``, which refreshes an expired
        one): a stream that has sent audio cannot be retried. The call has the client's
        ``stream_timeout``. Errors are raised as for :class:`~parley_client.live.Conversation`.
        """
        config = chat_service_pb2.ConverseConfig(
            session=session,
            branch=branch,
            input_format=input_format,
            output_format=output_format,
            language=language,
        )
        return Conversation(self._open_converse, config)

    async def _open_converse(self) -> grpc.aio.StreamStreamCall[Any, Any]:
        await self.get_current_token()
        # No request iterator: the asyncio call's write()/done_writing() send (the stubs type the
        # sync API, which needs one).
        return self._s.chat.Converse(  # type: ignore[call-arg]
            timeout=self.stream_timeout, metadata=self._metadata(True)
        )

    async def cancel_message(self, name: str) -> chat_service_pb2.Message:
        """Stop the reply ``name`` from any connection (``CancelMessage``, within about a second);
        returns it as stored (INCOMPLETE, stop reason CANCELLED; unchanged if it had finished)."""
        request = chat_service_pb2.CancelMessageRequest(name=name)
        return (await self._unary(self._s.chat.CancelMessage, request)).message

    async def list_messages(
        self, session: str, *, branch: str = "", page_size: int = 0
    ) -> AsyncIterator[chat_service_pb2.Message]:
        """The conversation on the active branch (or ``branch``), oldest first."""
        request = chat_service_pb2.ListMessagesRequest(parent=session, page_size=page_size, branch=branch)
        async for message in self._pages(self._s.chat.ListMessages, request, "messages"):
            yield message

    async def get_message(self, name: str) -> chat_service_pb2.Message:
        """One message, by name ``sessions/{session}/messages/{message}``."""
        request = chat_service_pb2.GetMessageRequest(name=name)
        return (await self._unary(self._s.chat.GetMessage, request)).message

    def synthesize_speech(
        self,
        name: str,
        *,
        format: common_pb2.AudioFormat.ValueType = common_pb2.AUDIO_FORMAT_UNSPECIFIED,
        voice: str = "",
    ) -> AsyncIterator[common_pb2.AudioChunk]:
        """Speak a stored message: its audio, sentence by sentence (``SynthesizeSpeech``).
        Concatenating every chunk's ``data`` gives one file of the chunks' ``format``."""
        request = chat_service_pb2.SynthesizeSpeechRequest(name=name, format=format, voice=voice)
        return self._stream(lambda: self._s.chat.SynthesizeSpeech, request)

    # --- branches --------------------------------------------------------------------------------

    async def create_branch(
        self, session: str, from_message: str, *, display_name: str = ""
    ) -> branch_service_pb2.Branch:
        """Fork ``session`` at ``from_message`` (a new branch whose head is that message; it does
        not become active).

        Raises:
            UnimplementedError: the server does not offer branching yet.
        """
        request = branch_service_pb2.CreateBranchRequest(
            parent=session, from_message=from_message, display_name=display_name
        )
        return (await self._unary(self._s.branches.CreateBranch, request)).branch

    async def list_branches(
        self, session: str, *, page_size: int = 0
    ) -> AsyncIterator[branch_service_pb2.Branch]:
        """The session's branches, oldest first."""
        request = branch_service_pb2.ListBranchesRequest(parent=session, page_size=page_size)
        async for branch in self._pages(self._s.branches.ListBranches, request, "branches"):
            yield branch

    async def get_branch(self, name: str) -> branch_service_pb2.Branch:
        """One branch, by name ``sessions/{session}/branches/{branch}``."""
        request = branch_service_pb2.GetBranchRequest(name=name)
        return (await self._unary(self._s.branches.GetBranch, request)).branch

    async def set_active_branch(self, session: str, branch: str) -> session_service_pb2.Session:
        """Make ``branch`` the one sends and :meth:`list_messages` use; returns the session."""
        request = branch_service_pb2.SetActiveBranchRequest(session=session, branch=branch)
        return (await self._unary(self._s.branches.SetActiveBranch, request)).session

    async def delete_branch(self, name: str) -> None:
        """Delete a branch pointer (not the active one, not the last one)."""
        request = branch_service_pb2.DeleteBranchRequest(name=name)
        await self._unary(self._s.branches.DeleteBranch, request)

    # --- accounts and usage ----------------------------------------------------------------------

    @property
    def admin(self) -> AdminClient:
        """AdminService (users' roles, access and quotas; run-time settings): admins only."""
        return AdminClient(self)

    async def delete_user(self, name: str = "users/me", *, password: str = "") -> None:
        """Delete a user with everything they own: ``users/me`` with your password again, or any
        ``users/{user}`` as an admin. Your tokens stop working.

        Raises:
            UnauthenticatedError: a wrong password (``INVALID_CREDENTIALS``).
            FailedPreconditionError: the last admin (``LAST_ADMIN``).
        """
        request = auth_service_pb2.DeleteUserRequest(name=name, password=password)
        await self._unary(self._s.auth.DeleteUser, request)
        if name == "users/me":
            self._tokens = None

    async def get_usage(
        self,
        parent: str = "users/me",
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> usage_service_pb2.GetUsageResponse:
        """Tokens, audio and messages spent under ``parent`` (``users/me``, ``agents/{a}``,
        ``sessions/{s}``, ``sessions/{s}/branches/{b}``; another user's: admins) over
        [``start_time``, ``end_time``), timezone-aware datetimes (unset: all time, now)."""
        request = usage_service_pb2.GetUsageRequest(parent=parent)
        if start_time is not None:
            request.start_time.FromDatetime(start_time)
        if end_time is not None:
            request.end_time.FromDatetime(end_time)
        return await self._unary(self._s.usage.GetUsage, request)

    # --- plumbing --------------------------------------------------------------------------------

    def _set_tokens(self, tokens: Tokens) -> Tokens:
        self._tokens = tokens
        if self._on_tokens is not None:
            self._on_tokens(tokens)
        return tokens

    def _metadata(self, auth: bool) -> tuple[tuple[str, str], ...]:
        if not auth:
            return ()
        if self._tokens is None:
            raise _not_logged_in()
        return (("authorization", f"Bearer {self._tokens.access_token}"),)

    async def _retry_after(self, error: ParleyError, used_token: str | None) -> bool:
        """Whether a call that failed with ``error`` should be retried: yes after an expired access
        token, once a fresh one is in hand. One refresh serves every call that failed with the same
        token (a refresh token works once)."""
        if (
            error.code != grpc.StatusCode.UNAUTHENTICATED
            or error.reason != "TOKEN_EXPIRED"
            or used_token is None
            or self._tokens is None
        ):
            return False
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        async with self._refresh_lock:
            if self._tokens is not None and self._tokens.access_token != used_token:
                return True  # another call refreshed meanwhile
            await self.refresh()
        return True

    def _token(self) -> str | None:
        return self._tokens.access_token if self._tokens is not None else None

    async def _unary(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Req,
        *,
        auth: bool = True,
    ) -> Resp:
        for attempt in range(2):
            used = self._token() if auth else None
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata(auth))
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                if attempt == 0 and auth and await self._retry_after(error, used):
                    continue
                raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pages(self, method: Callable[..., Any], request: Any, field: str) -> AsyncIterator[Any]:
        """Every item of a List method (AIP-158): ``request`` with each ``page_token`` in turn,
        the repeated ``field`` of each page, until ``next_page_token`` is empty."""
        while True:
            page = await self._unary(method, request)
            for item in getattr(page, field):
                yield item
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def _stream(
        self,
        method: Callable[[], Callable[..., grpc.aio.UnaryStreamCall[Req, Resp]]],
        request: Req,
    ) -> AsyncIterator[Resp]:
        for attempt in range(2):
            used = self._token()
            call = method()(request, timeout=self.stream_timeout, metadata=self._metadata(True))
            received = False
            try:
                async for item in call:
                    received = True
                    yield item
                return
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                if attempt == 0 and not received and await self._retry_after(error, used):
                    continue
                raise error from None
            finally:
                call.cancel()  # no-op once finished; stops the reply if the caller stopped early
        raise AssertionError("unreachable")  # pragma: no cover


M = TypeVar("M", agent_service_pb2.Tool, agent_service_pb2.McpServer)


def _message(value: M | Mapping[str, Any], kind: type[M]) -> M:
    """A proto message, or one parsed from its JSON form (proto3 JSON names, either case)."""
    if isinstance(value, kind):
        return value
    return json_format.ParseDict(dict(value), kind())


def _not_logged_in() -> ParleyError:
    return UnauthenticatedError(
        grpc.StatusCode.UNAUTHENTICATED, "not logged in: call login() first", reason="NOT_LOGGED_IN"
    )


class _Stubs:
    """The generated asyncio stubs of every service, over one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        self.agents = agent_service_pb2_grpc.AgentServiceStub(channel)
        self.sessions = session_service_pb2_grpc.SessionServiceStub(channel)
        self.chat = chat_service_pb2_grpc.ChatServiceStub(channel)
        self.branches = branch_service_pb2_grpc.BranchServiceStub(channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        self.usage = usage_service_pb2_grpc.UsageServiceStub(channel)
