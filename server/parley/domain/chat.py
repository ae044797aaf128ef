"""The conversation engine: store the user message, build the context, stream the reply, store it.

Invariants (DESIGN.md, "Conversation model"):
- the user message is stored before generation starts; nothing the user sent is ever lost;
- a reply cut short (client cancel, deadline, provider error, shutdown) is stored INCOMPLETE
  with its stop reason and whatever text was generated;
- a branch head only ever points at a stored message (message first, then a compare-and-set
  of the head);
- sends to one branch are serialized; sends to different branches run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, replace

from parley.domain.clock import Clock, utc_now
from parley.domain.context import build_context
from parley.domain.errors import Aborted, InvalidArgument, NotFound, ParleyError, ResourceExhausted
from parley.domain.models import Agent, Branch, Message, MessageStatus, Role, Session, StopReason
from parley.domain.names import message_name, new_id, parse_branch
from parley.domain.pagination import PageRequest, encode_token
from parley.domain.summary import ContextSummarizer
from parley.providers.llm.base import GenerationRequest, StopEvent, TextDeltaEvent, UsageEvent
from parley.providers.llm.registry import ModelRegistry, ResolvedModel
from parley.storage.messages import MessageRepository
from parley.storage.sql.store import MetadataStore

__all__ = [
    "Accepted",
    "AudioReady",
    "ChatEngine",
    "ChatEvent",
    "Completed",
    "Delta",
    "TranscriptReady",
    "UsageReport",
]

log = logging.getLogger(__name__)

#: A cancel this close to the RPC deadline counts as the deadline (the client's and the server's
#: clocks for it differ by the network latency).
DEADLINE_SLACK_S = 0.25

#: At most this many of the newest messages are read to build a context (then trimmed to fit).
CONTEXT_MAX_MESSAGES = 200


@dataclass(frozen=True, slots=True)
class Accepted:
    user_message: Message
    assistant_message_id: str
    branch_id: str


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Completed:
    message: Message


@dataclass(frozen=True, slots=True)
class TranscriptReady:
    """What speech-to-text heard (voice sends). ``duration_s``: seconds of audio."""

    text: str
    language: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class AudioReady:
    """A piece of the spoken reply: encoded bytes of ``format`` at ``sample_rate_hz`` Hz.
    ``text`` is the sentence it starts speaking (empty for the trailing flush)."""

    data: bytes
    format: str
    sample_rate_hz: int
    segment_index: int
    text: str = ""
    language: str = ""


ChatEvent = Accepted | TranscriptReady | Delta | AudioReady | UsageReport | Completed


class ChatEngine:
    """Runs sends; owned by the server, shared by all RPCs."""

    def __init__(
        self,
        store: MetadataStore,
        messages: MessageRepository,
        models: ModelRegistry,
        *,
        max_message_chars: int,
        max_request_id_chars: int,
        default_max_output_tokens: int,
        max_concurrent_replies_per_user: int = 4,
        summarizer: ContextSummarizer | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._messages = messages
        self._models = models
        self._max_chars = max_message_chars
        self._max_request_id = max_request_id_chars
        self._default_max_output = default_max_output_tokens
        self._now = clock
        self._summarizer = summarizer
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._inflight: set[asyncio.Future[None]] = set()
        self._max_replies = max_concurrent_replies_per_user
        self._replies: dict[str, int] = {}
        self.shutting_down = False

    # --- reads ---------------------------------------------------------------------------------

    async def session_and_branch(self, owner_id: str, session_id: str, branch: str) -> tuple[Session, Branch]:
        """The caller's session and the named branch (``""`` = the active one), or ``NotFound``."""
        session = await self._store.get_session(owner_id, session_id)
        if session is None:
            raise NotFound.resource(f"sessions/{session_id}")
        branch_id = session.active_branch_id
        if branch:
            branch_session, branch_id = parse_branch(branch)
            if branch_session != session_id:
                raise NotFound.resource(branch)
        found = await self._store.get_branch(session_id, branch_id)
        if found is None:
            raise NotFound.resource(branch or f"sessions/{session_id}/branches/{branch_id}")
        return session, found

    async def list_messages(
        self, owner_id: str, session_id: str, branch: str, page: PageRequest
    ) -> tuple[Sequence[Message], str]:
        """A page of the branch's path, oldest first. The cursor is the last message's depth."""
        _, b = await self.session_and_branch(owner_id, session_id, branch)
        if b.head_id is None:
            return [], ""
        start = 0 if page.after is None else _depth_cursor(page.after) + 1
        rows = await self._messages.path(session_id, b.head_id, start, page.size + 1)
        more = len(rows) > page.size
        rows = rows[: page.size]
        return rows, encode_token(str(rows[-1].depth), page) if more and rows else ""

    async def get_message(self, owner_id: str, session_id: str, message_id: str) -> Message:
        if await self._store.get_session(owner_id, session_id) is None:
            raise NotFound.resource(message_name(session_id, message_id))
        message = await self._messages.get(session_id, message_id)
        if message is None:
            raise NotFound.resource(message_name(session_id, message_id))
        return message

    # --- sends ---------------------------------------------------------------------------------

    def validate_text(self, text: str) -> str:
        """The message text, or ``InvalidArgument`` if empty/whitespace or over the limit."""
        if not text.strip():
            raise InvalidArgument.field("text", "must not be empty", reason="EMPTY_MESSAGE")
        if len(text) > self._max_chars:
            raise InvalidArgument.field(
                "text", f"at most {self._max_chars} characters (got {len(text)})", reason="MESSAGE_TOO_LONG"
            )
        return text

    async def send(
        self,
        owner_id: str,
        session_id: str,
        text: str,
        *,
        branch: str = "",
        request_id: str = "",
        deadline: float | None = None,
        transcript_language: str = "",
        audio_duration_s: float | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Store ``text`` as a user message and stream the reply.

        For a spoken message ``text`` is the transcript, ``transcript_language`` the language heard
        and ``audio_duration_s`` the recording's length in seconds; they are stored on the message.

        ``deadline`` is a ``time.monotonic()`` instant (the RPC deadline), used to tell a
        deadline from a plain cancel. Raises ``InvalidArgument`` for bad text or request id,
        ``NotFound`` for a session/branch that is absent or another user's.
        """
        text = self.validate_text(text)
        if len(request_id) > self._max_request_id:
            raise InvalidArgument.field("request_id", f"at most {self._max_request_id} characters")
        session, b = await self.session_and_branch(owner_id, session_id, branch)
        agent = await self._store.get_agent(owner_id, session.agent_id)
        if agent is None:  # the agent was deleted while the session was read
            raise NotFound.resource(f"sessions/{session_id}")
        resolved = self._models.resolve(agent.model, field="agent.model")

        with self._reply_slot(owner_id):
            async with self._lock(session_id, b.id):
                if request_id:
                    previous = await self._messages.find_by_request_id(session_id, request_id)
                    if previous is not None:
                        async for event in self._replay(previous, b.id):
                            yield event
                        return
                b = await self._store.get_branch(session_id, b.id) or _gone(b)
                depth = b.message_count
                user = Message(
                    id=new_id(),
                    session_id=session_id,
                    parent_id=b.head_id,
                    depth=depth,
                    role=Role.USER,
                    text=text,
                    status=MessageStatus.COMPLETE,
                    stop_reason=StopReason.NONE,
                    model="",
                    input_tokens=0,
                    output_tokens=0,
                    create_time=self._now(),
                    request_id=request_id,
                    transcript_language=transcript_language,
                    audio_duration_s=audio_duration_s,
                )
                # Decide the prompt before storing anything: a message that can never fit is refused whole.
                request, input_tokens = await self._prompt(agent, resolved, user)
                if not await self._messages.append(user, b.id, b.head_id):
                    raise Aborted("the branch moved during the send; retry", reason="BRANCH_CONFLICT")
                assistant_id = new_id()
                yield Accepted(user, assistant_id, b.id)
                generation = self._generate(
                    resolved, request, input_tokens, user, assistant_id, b.id, deadline
                )
                async with contextlib.aclosing(generation):
                    async for event in generation:
                        yield event

    async def regenerate(
        self, owner_id: str, session_id: str, message_id: str, *, deadline: float | None = None
    ) -> AsyncGenerator[ChatEvent, None]:
        """Generate a new reply in place of the assistant message ``message_id``: a sibling of it,
        on a new branch forked at its user message, which becomes the active branch. The old reply
        stays on its branch.

        Raises ``NotFound`` for a message that is absent or another user's, ``InvalidArgument``
        (NOT_AN_ASSISTANT_MESSAGE) for a user message (edit it by forking at its parent and sending).
        """
        session = await self._store.get_session(owner_id, session_id)
        old = await self._messages.get(session_id, message_id) if session is not None else None
        if session is None or old is None:
            raise NotFound.resource(message_name(session_id, message_id))
        if old.role is not Role.ASSISTANT or old.parent_id is None:
            raise InvalidArgument.field(
                "name",
                "only an assistant message can be regenerated; to edit a user message, fork at its parent "
                "(CreateBranch) and send the new text to that branch",
                reason="NOT_AN_ASSISTANT_MESSAGE",
            )
        user = await self._messages.get(session_id, old.parent_id)
        agent = await self._store.get_agent(owner_id, session.agent_id)
        if user is None or agent is None:
            raise NotFound.resource(message_name(session_id, message_id))
        resolved = self._models.resolve(agent.model, field="agent.model")
        request, input_tokens = await self._prompt(agent, resolved, user)
        now = self._now()
        branch = Branch(
            session_id=session_id,
            id=new_id(),
            display_name=f"Regenerated at message {old.depth + 1}",
            head_id=user.id,
            fork_point_id=user.id,
            message_count=user.depth + 1,
            create_time=now,
            update_time=now,
        )
        with self._reply_slot(owner_id):
            await self._store.create_branch(branch)
            await self._store.set_active_branch(session_id, branch.id, now)
            async with self._lock(session_id, branch.id):
                assistant_id = new_id()
                yield Accepted(user, assistant_id, branch.id)
                generation = self._generate(
                    resolved, request, input_tokens, user, assistant_id, branch.id, deadline
                )
                async with contextlib.aclosing(generation):
                    async for event in generation:
                        yield event

    async def _prompt(
        self, agent: Agent, resolved: ResolvedModel, user: Message
    ) -> tuple[GenerationRequest, int]:
        """The generation request for a reply to ``user`` (not yet stored), and its input tokens."""
        max_output = agent.max_output_tokens or self._default_max_output
        max_output = min(max_output, resolved.provider.context_window(resolved.model) // 2)
        history: Sequence[Message] = []
        if user.parent_id is not None:
            history = await self._messages.path(
                user.session_id,
                user.parent_id,
                max(0, user.depth - CONTEXT_MAX_MESSAGES),
                CONTEXT_MAX_MESSAGES,
            )
        if self._summarizer is not None:  # PARLEY_CONTEXT_SUMMARY: trimmed history is summarized
            turns, input_tokens = await self._summarizer.build_context(
                resolved, user.session_id, agent.instructions, [*history, user], max_output
            )
        else:
            turns, input_tokens = build_context(
                resolved.provider, resolved.model, agent.instructions, [*history, user], max_output
            )
        return GenerationRequest(resolved.model, turns, max_output, agent.temperature), input_tokens

    async def _replay(self, user: Message, branch_id: str) -> AsyncGenerator[ChatEvent, None]:
        replies = [
            m for m in await self._messages.children(user.session_id, user.id) if m.role is Role.ASSISTANT
        ]
        reply = replies[0] if replies else None
        yield Accepted(user, reply.id if reply else "", branch_id)
        if reply is not None:
            if reply.text:
                yield Delta(reply.text)
            yield UsageReport(reply.input_tokens, reply.output_tokens)
            yield Completed(reply)

    async def _generate(
        self,
        resolved: ResolvedModel,
        request: GenerationRequest,
        input_tokens: int,
        user: Message,
        assistant_id: str,
        branch_id: str,
        deadline: float | None,
    ) -> AsyncGenerator[ChatEvent, None]:
        parts: list[str] = []
        usage = UsageReport(input_tokens, 0)
        stop = StopReason.NONE
        ttft: float | None = None
        started = time.monotonic()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight.add(done)
        reply = Message(
            id=assistant_id,
            session_id=user.session_id,
            parent_id=user.id,
            depth=user.depth + 1,
            role=Role.ASSISTANT,
            text="",
            status=MessageStatus.COMPLETE,
            stop_reason=StopReason.NONE,
            model=resolved.qualified_name,
            input_tokens=input_tokens,
            output_tokens=0,
            create_time=self._now(),
        )
        try:
            stream = resolved.provider.stream(request)
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if isinstance(event, TextDeltaEvent):
                        if ttft is None:
                            ttft = time.monotonic() - started
                        parts.append(event.text)
                        yield Delta(event.text)
                    elif isinstance(event, UsageEvent):
                        usage = UsageReport(event.input_tokens, event.output_tokens)
                    elif isinstance(event, StopEvent):
                        stop = event.stop_reason
            reply = replace(
                reply,
                text="".join(parts),
                stop_reason=stop or StopReason.END_TURN,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                time_to_first_token_s=ttft,
                create_time=self._now(),
            )
            await self._store_reply(reply, branch_id)
            yield usage
            yield Completed(reply)
        except (asyncio.CancelledError, GeneratorExit):
            reason = (
                StopReason.SHUTDOWN
                if self.shutting_down
                else StopReason.DEADLINE_EXCEEDED
                if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK_S
                else StopReason.CANCELLED
            )
            await self._store_cut_short(reply, parts, ttft, reason, reason.value.replace("_", " "), branch_id)
            raise
        except ParleyError as exc:
            await self._store_cut_short(reply, parts, ttft, StopReason.ERROR, exc.message, branch_id)
            raise
        except Exception as exc:
            await self._store_cut_short(reply, parts, ttft, StopReason.ERROR, "internal error", branch_id)
            raise ParleyError(f"generation failed: {type(exc).__name__}") from exc
        finally:
            done.set_result(None)
            self._inflight.discard(done)

    async def _store_cut_short(
        self,
        reply: Message,
        parts: list[str],
        ttft: float | None,
        reason: StopReason,
        detail: str,
        branch_id: str,
    ) -> None:
        text = "".join(parts)
        reply = replace(
            reply,
            text=text,
            status=MessageStatus.INCOMPLETE if text else MessageStatus.FAILED,
            stop_reason=reason,
            time_to_first_token_s=ttft,
            error_message=detail,
            output_tokens=len(parts),
            create_time=self._now(),
        )
        # Shielded: the task may be cancelled, but the partial reply must still be written.
        try:
            await asyncio.shield(self._store_reply(reply, branch_id))
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("could not store the partial reply %s", reply.id)

    async def _store_reply(self, reply: Message, branch_id: str) -> None:
        assert reply.parent_id is not None
        if not await self._messages.append(reply, branch_id, reply.parent_id, must_move_head=False):
            log.warning(
                "branch %s/%s moved during generation; reply %s stored off-branch",
                reply.session_id,
                branch_id,
                reply.id,
            )

    @contextlib.contextmanager
    def _reply_slot(self, owner_id: str) -> Iterator[None]:
        """Count a reply in flight for ``owner_id``; ``ResourceExhausted`` over the per-user limit
        (``PARLEY_MAX_CONCURRENT_REPLIES_PER_USER``): one user cannot queue the shared model."""
        running = self._replies.get(owner_id, 0)
        if running >= self._max_replies:
            raise ResourceExhausted(
                f"at most {self._max_replies} replies may be generated at once per user; "
                "wait for one to finish",
                reason="TOO_MANY_CONCURRENT_REPLIES",
                metadata={"limit": str(self._max_replies)},
            )
        self._replies[owner_id] = running + 1
        try:
            yield
        finally:
            if self._replies[owner_id] <= 1:
                del self._replies[owner_id]
            else:
                self._replies[owner_id] -= 1

    def _lock(self, session_id: str, branch_id: str) -> asyncio.Lock:
        key = (session_id, branch_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def wait_idle(self) -> None:
        """Wait until every reply in flight has been stored (bound it with ``asyncio.timeout``)."""
        pending = list(self._inflight)
        if pending:
            await asyncio.wait(pending)


def _depth_cursor(value: str) -> int:
    try:
        depth = int(value)
    except ValueError:
        raise InvalidArgument.field(
            "page_token", "malformed page token", reason="INVALID_PAGE_TOKEN"
        ) from None
    if depth < 0:
        raise InvalidArgument.field("page_token", "malformed page token", reason="INVALID_PAGE_TOKEN")
    return depth


def _gone(branch: Branch) -> Branch:
    raise NotFound.resource(f"sessions/{branch.session_id}/branches/{branch.id}")
