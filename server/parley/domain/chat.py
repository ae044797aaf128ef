"""The conversation engine: store the user message, build the context, start the reply's run.

Invariants (docs/design.md, "Conversation model" and "Runs"):
- the user message is stored before generation starts; nothing the user sent is ever lost;
- the reply exists from the start of its run (status IN_PROGRESS), stored in the same
  transaction as its user message, and its run checkpoints its text while it grows;
- a reply cut short (cancel, deadline, provider error, shutdown, a dead server) is stored
  INCOMPLETE with its stop reason and whatever text was generated;
- a branch head only ever points at a stored message (compare-and-set of the head);
- sends to one branch are serialized; sends to different branches run concurrently.

A send reads its session, agent and branch once (one query), then the history path for the
context, then writes the user message and the IN_PROGRESS reply in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parley.domain.accounts import Principal
from parley.domain.clock import Clock, utc_now
from parley.domain.drafts import Spoken, reply_message, run_record, usage_record, user_message
from parley.domain.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Reason
from parley.domain.models import Agent, Branch, Message, MessageStatus, Role
from parley.domain.names import message_name, new_id, parse_branch
from parley.domain.pagination import PageRequest, encode_token
from parley.domain.prompt import Prompter
from parley.domain.replies import assistant_message, replayed
from parley.domain.reply import TextReply
from parley.domain.summary import ContextSummarizer
from parley.domain.toolbox import Toolbox, Toolboxes
from parley.domain.turn import AgentTurn
from parley.providers.llm.base import GenerationRequest
from parley.providers.llm.early import EarlyStream
from parley.providers.llm.registry import ModelRegistry, ResolvedModel
from parley.runs.admission import Admission, Ticket
from parley.runs.events import Accepted
from parley.runs.manager import RunBody, RunManager, RunSpec, Subscription
from parley.runs.quotas import QuotaMeter, Reservation
from parley.runs.replay import replay_stored
from parley.runs.sweep import RunSweeper
from parley.storage.messages import MessageStore, RunRecord
from parley.storage.sql.sessions import SendTarget, SessionStore

__all__ = ["ChatEngine", "ChatLimits", "ToolSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChatLimits:
    """``max_message_chars`` (``PARLEY_MAX_MESSAGE_CHARS``), ``max_request_id_chars``,
    ``default_max_output_tokens`` (tokens, when the agent sets none)."""

    max_message_chars: int = 32_768
    max_request_id_chars: int = 128
    default_max_output_tokens: int = 512


@dataclass(frozen=True, slots=True)
class ToolSettings:
    """How agents' tools run: ``toolboxes`` (HTTP and MCP clients), at most ``max_steps`` model
    calls a turn (``PARLEY_TOOLS_MAX_STEPS``), ``wait_s`` seconds for client outputs and
    approvals (``PARLEY_TOOL_WAIT_SECONDS``)."""

    toolboxes: Toolboxes
    max_steps: int = 8
    wait_s: float = 600.0


#: Wraps the reply of a run into the body the run executes (voice adds speech).
BodyFactory = Callable[[TextReply | AgentTurn], RunBody]


class ChatEngine:
    """Sends, regenerations, resumes and cancels of replies; reads of messages. One per server."""

    def __init__(
        self,
        sessions: SessionStore,
        messages: MessageStore,
        models: ModelRegistry,
        runs: RunManager,
        admission: Admission,
        quotas: QuotaMeter,
        sweeper: RunSweeper,
        *,
        limits: ChatLimits,
        tools: ToolSettings | None = None,
        summarizer: ContextSummarizer | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._messages = messages
        self._models = models
        self._runs = runs
        self._admission = admission
        self._quotas = quotas
        self._sweeper = sweeper
        self._tools = tools
        self._limits = limits
        self._prompter = Prompter(
            messages, default_max_output_tokens=limits.default_max_output_tokens, summarizer=summarizer
        )
        self._now = clock

    # --- reads ---------------------------------------------------------------------------------

    async def target(self, owner_id: str, session_id: str, branch: str = "") -> SendTarget:
        """The caller's session, its agent and the named branch (``""``: the active one), read in
        one query; ``NotFound`` when the session or branch is absent or another user's."""
        branch_id: str | None = None
        if branch:
            branch_session, branch_id = parse_branch(branch)
            if branch_session != session_id:
                raise NotFound.resource(branch)
        target = await self._sessions.send_target(owner_id, session_id, branch_id)
        if target is None:
            raise NotFound.resource(f"sessions/{session_id}")
        if target.branch is None:
            raise NotFound.resource(
                branch or f"sessions/{session_id}/branches/{target.session.active_branch_id}"
            )
        return target

    async def list_messages(
        self, owner_id: str, session_id: str, branch: str, page: PageRequest
    ) -> tuple[Sequence[Message], str]:
        """A page of the branch's path, oldest first. The cursor is the last message's depth."""
        b = _branch_of(await self.target(owner_id, session_id, branch))
        if b.head_id is None:
            return [], ""
        start = 0 if page.after is None else _depth_cursor(page.after) + 1
        rows = await self._messages.path(session_id, b.head_id, start, page.size + 1)
        more = len(rows) > page.size
        rows = rows[: page.size]
        return rows, encode_token(str(rows[-1].depth), page) if more and rows else ""

    async def get_message(self, owner_id: str, session_id: str, message_id: str) -> Message:
        """The message; ``NotFound`` when it is absent or in another user's session."""
        if await self._sessions.get(owner_id, session_id) is None:
            raise NotFound.resource(message_name(session_id, message_id))
        message = await self._messages.get(session_id, message_id)
        if message is None:
            raise NotFound.resource(message_name(session_id, message_id))
        return message

    # --- sends ---------------------------------------------------------------------------------

    def validate_text(self, text: str) -> str:
        """The message text, or ``InvalidArgument`` if empty/whitespace or over the limit."""
        if not text.strip():
            raise InvalidArgument.field("text", "must not be empty", reason=Reason.EMPTY_MESSAGE)
        limit = self._limits.max_message_chars
        if len(text) > limit:
            raise InvalidArgument.field(
                "text", f"at most {limit} characters (got {len(text)})", reason=Reason.MESSAGE_TOO_LONG
            )
        return text

    def validate_request_id(self, request_id: str) -> str:
        limit = self._limits.max_request_id_chars
        if len(request_id) > limit:
            raise InvalidArgument.field("request_id", f"at most {limit} characters")
        return request_id

    async def send(
        self,
        principal: Principal,
        session_id: str,
        text: str,
        *,
        branch: str = "",
        request_id: str = "",
        background: bool = False,
        deadline: float | None = None,
    ) -> Subscription:
        """Store ``text`` as a user message, start the reply's run, and subscribe to it.

        ``background``: the run goes on when every subscriber has left (otherwise the last one
        leaving cancels it). ``deadline`` is the RPC deadline as a ``time.monotonic()`` instant.
        Raises (before anything is stored) ``InvalidArgument`` for bad text or request id,
        ``NotFound`` for a session/branch that is absent or another user's, ``ResourceExhausted``
        over the per-user reply limit (TOO_MANY_CONCURRENT_REPLIES) or the daily quota
        (QUOTA_EXCEEDED).
        """
        text = self.validate_text(text)
        self.validate_request_id(request_id)
        target = await self.target(principal.user_id, session_id, branch)
        return await self.send_to(
            principal, target, text, request_id=request_id, background=background, deadline=deadline
        )

    async def send_to(
        self,
        principal: Principal,
        target: SendTarget,
        text: str,
        *,
        request_id: str = "",
        background: bool = False,
        deadline: float | None = None,
        spoken: Spoken | None = None,
        body: BodyFactory | None = None,
    ) -> Subscription:
        """:meth:`send` to a target already read (``text`` already validated). ``spoken`` marks a
        voice message; ``body`` wraps the text reply (speech)."""
        session, agent, b = target.session, target.agent, _branch_of(target)
        resolved = self._models.resolve(agent.model, field="agent.model")
        if request_id and (replay := await self._replay(session.id, request_id, b.id, deadline)):
            return replay
        waiting = self._runs.waiting_on(session.id, b.id)
        if waiting is None and target.head_status is MessageStatus.REQUIRES_ACTION:
            waiting = b.head_id  # paused on another replica (or its server died: cancel it)
        if waiting:
            raise FailedPrecondition(
                f"the branch's reply {message_name(session.id, waiting)} waits for tool outputs or "
                "approvals: send them (SubmitToolOutputs) or cancel it (CancelMessage) first",
                reason=Reason.REPLY_REQUIRES_ACTION,
                metadata={"message": message_name(session.id, waiting)},
            )
        toolbox = await self._toolbox(agent)
        ticket = await self._admit(principal, session.id, b.id)
        try:
            if request_id and (replay := await self._replay(session.id, request_id, b.id, deadline)):
                ticket.release()
                return replay
            audio_s = spoken.duration_s if spoken else 0.0
            for attempt in range(2):
                user = user_message(b, text, request_id, spoken, self._now())
                # Decide the prompt before storing anything: a message that can never fit is refused whole.
                request, input_tokens = await self._prompter.prompt(
                    agent, resolved, user, toolbox, branch=b, owner_id=principal.user_id
                )
                reply = reply_message(user, resolved.qualified_name, input_tokens, self._now())
                run = self._run_record(reply, principal.user_id, b.id, background)
                usage = usage_record(reply, principal.user_id, agent.id, audio_s, 2)
                quota = await self._quotas.admit(
                    principal.user_id,
                    principal.quota,
                    input_tokens=input_tokens,
                    audio_seconds=audio_s,
                    max_output_tokens=self._output_budget(request, toolbox),
                )
                early = self._early(resolved, request, toolbox)  # sent while the turn is written
                try:
                    stored = await self._messages.start_reply(
                        reply, run, user=user, expected_head=b.head_id, usage=usage
                    )
                except BaseException:
                    self._quotas.refund(quota, input_tokens=input_tokens, audio_seconds=audio_s)
                    if early is not None:
                        early.discard()
                    raise
                if stored:
                    break
                if early is not None:
                    early.discard()
                self._quotas.refund(quota, input_tokens=input_tokens, audio_seconds=audio_s)
                # Another writer moved the head since it was read (an earlier send that held the
                # lock): read the branch again and retry once.
                b = await self._sessions.get_branch(session.id, b.id) or _gone(b)
                if attempt:
                    raise Aborted("the branch moved during the send; retry", reason=Reason.BRANCH_CONFLICT)
            reply_body = self._body(
                Accepted(user, reply.id, b.id), reply, agent, resolved, request, quota, toolbox, early
            )
            return self._start(run, ticket, quota, body(reply_body) if body else reply_body, deadline)
        except BaseException:
            ticket.release()
            raise

    async def regenerate(
        self,
        principal: Principal,
        session_id: str,
        message_id: str,
        *,
        background: bool = False,
        deadline: float | None = None,
    ) -> Subscription:
        """Generate a new reply in place of the assistant message ``message_id``: a sibling of it,
        on a new branch forked at its user message, which becomes the active branch (one
        transaction with the new reply). The old reply stays on its branch. A reply that took
        tool steps is regenerated whole, from its user message.

        Raises ``NotFound`` for a message that is absent or another user's, ``InvalidArgument``
        (NOT_AN_ASSISTANT_MESSAGE) for a user message (edit it by forking at its parent and sending).
        """
        target = await self.target(principal.user_id, session_id)
        old = await assistant_message(self._messages, session_id, message_id)
        # A reply with tool steps is regenerated whole: from the user message of its run.
        first = old
        if old.run_id and old.run_id != old.id:
            first = await self._messages.get(session_id, old.run_id) or old
        user = await self._messages.get(session_id, first.parent_id or "")
        if user is None or user.role is not Role.USER:
            raise NotFound.resource(message_name(session_id, message_id))
        resolved = self._models.resolve(target.agent.model, field="agent.model")
        toolbox = await self._toolbox(target.agent)
        now = self._now()
        branch = Branch(
            session_id=session_id,
            id=new_id(),
            display_name=f"Regenerated at message {first.depth + 1}",
            head_id=user.id,
            fork_point_id=user.id,
            message_count=user.depth + 1,
            create_time=now,
            update_time=now,
        )
        request, input_tokens = await self._prompter.prompt(
            target.agent, resolved, user, toolbox, branch=branch, owner_id=principal.user_id
        )
        ticket = await self._admit(principal, session_id, branch.id)
        try:
            reply = reply_message(user, resolved.qualified_name, input_tokens, self._now())
            run = self._run_record(reply, principal.user_id, branch.id, background)
            usage = usage_record(reply, principal.user_id, target.agent.id, 0.0, 1)
            quota = await self._quotas.admit(
                principal.user_id,
                principal.quota,
                input_tokens=input_tokens,
                max_output_tokens=self._output_budget(request, toolbox),
            )
            early = self._early(resolved, request, toolbox)
            try:
                await self._messages.start_reply(reply, run, new_branch=branch, usage=usage)
            except BaseException:
                self._quotas.refund(quota, input_tokens=input_tokens)
                if early is not None:
                    early.discard()
                raise
            accepted = Accepted(user, reply.id, branch.id)
            reply_body = self._body(accepted, reply, target.agent, resolved, request, quota, toolbox, early)
            return self._start(run, ticket, quota, reply_body, deadline)
        except BaseException:
            ticket.release()
            raise

    # --- helpers -------------------------------------------------------------------------------

    async def _admit(self, principal: Principal, session_id: str, branch_id: str) -> Ticket:
        limit = self._quotas.limits(principal.quota).max_concurrent_replies
        return await self._admission.admit(principal.user_id, session_id, branch_id, limit=limit)

    def _start(
        self, run: RunRecord, ticket: Ticket, quota: Reservation, body: RunBody, deadline: float | None
    ) -> Subscription:
        def finish(reply: Message | None) -> None:
            quota.settle(reply)
            ticket.release()

        spec = RunSpec(run.id, run.user_id, run.session_id, run.branch_id, run.background, finish)
        return self._runs.start(spec, body, deadline=deadline)

    async def _replay(
        self, session_id: str, request_id: str, branch_id: str, deadline: float | None
    ) -> Subscription | None:
        """The outcome of an earlier send with ``request_id``: its live run, or its replay."""
        user = await self._messages.find_by_request_id(session_id, request_id)
        if user is None:
            return None
        replies = [m for m in await self._messages.children(session_id, user.id) if m.role is Role.ASSISTANT]
        if not replies:
            return Subscription.of(replay_stored(user, None, branch_id, 0, 0))
        live = await self._runs.follow(replies[0].id, 0, deadline=deadline)
        return live or await replayed(self._messages, replies[0], 0)

    def _run_record(self, reply: Message, owner_id: str, branch_id: str, background: bool) -> RunRecord:
        return run_record(reply, owner_id, branch_id, self._sweeper.replica_id, background)

    def _output_budget(self, request: GenerationRequest, toolbox: Toolbox | None) -> int:
        """The most tokens a reply may generate: one model call's, or every step's of a tool turn."""
        steps = self._tools.max_steps if toolbox is not None and self._tools is not None else 1
        return request.max_output_tokens * steps

    async def _toolbox(self, agent: Agent) -> Toolbox | None:
        """The tools of a reply of ``agent`` (None: it has none, or tools are not served)."""
        if self._tools is None or not (agent.tools or agent.mcp_servers):
            return None
        return await self._tools.toolboxes.for_agent(agent)

    def _early(
        self, resolved: ResolvedModel, request: GenerationRequest, toolbox: Toolbox | None
    ) -> EarlyStream | None:
        """A text reply's model call, sent now (``parley.providers.llm.early``); a tool turn's
        first request is built by its loop."""
        if toolbox is not None and self._tools is not None:
            return None
        return EarlyStream(resolved.provider, request)

    def _body(
        self,
        accepted: Accepted,
        reply: Message,
        agent: Agent,
        resolved: ResolvedModel,
        request: GenerationRequest,
        quota: Reservation,
        toolbox: Toolbox | None,
        early: EarlyStream | None = None,
    ) -> TextReply | AgentTurn:
        """The run body: the tool loop for an agent with tools, else a plain text reply."""
        if toolbox is None or self._tools is None:
            return TextReply(
                accepted, reply, resolved.provider, request, meter=quota.take_output, early=early
            )
        return AgentTurn(
            accepted,
            reply,
            resolved.provider,
            request,
            toolbox,
            self._messages,
            branch_id=accepted.branch_id,
            max_steps=self._tools.max_steps,
            wait_s=self._tools.wait_s,
            meter=quota.take_output,
        )


def _branch_of(target: SendTarget) -> Branch:
    assert target.branch is not None  # ChatEngine.target raises NotFound otherwise
    return target.branch


def _depth_cursor(value: str) -> int:
    try:
        depth = int(value)
    except ValueError:
        depth = -1
    if depth < 0:
        raise InvalidArgument.field("page_token", "malformed page token", reason=Reason.INVALID_PAGE_TOKEN)
    return depth


def _gone(branch: Branch) -> Branch:
    raise NotFound.resource(f"sessions/{branch.session_id}/branches/{branch.id}")
