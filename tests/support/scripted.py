"""A scripted model provider and the domain built in process, for fast tests of the chat engine
and runs (no server, no model: exact deltas, errors and hangs on demand).

``ScriptedProvider`` is a test double of ``parley.providers.llm.base.LLMProvider``: each call to
``stream`` plays the next queued :class:`Script` (or the default one) and records the request.
Tokens are counted as words plus four per turn, so context budgets are easy to reason about.
:class:`Domain` wires the real domain, runs and storage layers on a SQLite file, as
``parley.app.build_application`` does, minus gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from parley.domain.accounts import Principal
from parley.domain.chat import ChatEngine, ChatLimits, ToolSettings
from parley.domain.errors import Reason, Unavailable
from parley.domain.models import Agent, Branch, Quota, Session, StopReason, ToolSpec, User
from parley.domain.names import new_id
from parley.domain.replies import Replies
from parley.domain.sessions import MAIN_BRANCH_ID
from parley.domain.toolbox import Toolboxes
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolCallRequest,
    UsageEvent,
)
from parley.providers.llm.registry import ModelRegistry
from parley.runs.events import Sequenced
from parley.runs.manager import RunManager, Subscription
from parley.runs.shared import Shared, SharedOptions, build_shared
from parley.runs.sweep import RunSweeper
from parley.storage.content.sql import SqlContentStore
from parley.storage.messages import MessageStore
from parley.storage.read_cache import ReadCache
from parley.storage.sql.agents import AgentStore
from parley.storage.sql.engine import Database
from parley.storage.sql.replicas import ReplicaStore
from parley.storage.sql.sessions import SessionStore
from parley.storage.sql.usage import UsageStore
from parley.storage.sql.users import Caller, UserStore
from parley.tools.http import HttpToolRunner
from parley.tools.mcp import McpTools
from parley.tools.ssrf import AddressGuard

__all__ = ["Domain", "Script", "ScriptedProvider", "collect"]

MODEL = "scripted/test"


@dataclass
class Script:
    """What one ``stream`` call does: yield ``deltas`` (``delay_s`` apart); raise ``Unavailable``
    (PROVIDER_ERROR) before delta number ``fail_at``; or block forever before delta ``hang_at``."""

    deltas: Sequence[str] = ("Hello", " there", ".")
    delay_s: float = 0.0
    fail_at: int | None = None
    hang_at: int | None = None
    stop_reason: StopReason = StopReason.END_TURN
    #: Tool calls after the deltas, as (name, arguments JSON): the step stops with TOOL_USE.
    calls: Sequence[tuple[str, str]] = ()
    #: The ``tokens`` of each delta (streamed chunks a provider merged into it); empty: one each.
    tokens: Sequence[int] = ()


@dataclass
class ScriptedProvider:
    """``LLMProvider`` that plays scripts (see the module docstring)."""

    window: int = 2048
    name: str = "scripted"
    scripts: deque[Script] = field(default_factory=deque)
    requests: list[GenerationRequest] = field(default_factory=list)
    #: (monotonic time, deltas sent) of every stream closed before it finished.
    closed_early: list[tuple[float, int]] = field(default_factory=list)
    call_ids: int = 0

    def play(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def context_window(self, model: str) -> int:
        return self.window

    def supports_tools(self, model: str) -> bool:
        return True

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        return sum(len(t.content.split()) + 4 for t in turns)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        script = self.scripts.popleft() if self.scripts else Script()
        self.requests.append(request)
        sent, finished = 0, False
        try:
            for index, delta in enumerate(script.deltas):
                if script.fail_at == index:
                    raise Unavailable(
                        "scripted failure", reason=Reason.PROVIDER_ERROR, metadata={"provider": self.name}
                    )
                if script.hang_at == index:
                    await asyncio.Event().wait()
                if script.delay_s:
                    await asyncio.sleep(script.delay_s)
                yield TextDeltaEvent(delta, script.tokens[index] if script.tokens else 1)
                sent += 1
            for name, arguments in script.calls:
                self.call_ids += 1
                yield ToolCallEvent(ToolCallRequest(f"call_{self.call_ids}", name, arguments))
            output = sum(script.tokens) if script.tokens else len(script.deltas)
            yield UsageEvent(self.count_tokens(request.model, request.turns), output)
            yield StopEvent(StopReason.TOOL_USE if script.calls else script.stop_reason)
            finished = True
        finally:
            if not finished:
                self.closed_early.append((time.monotonic(), sent))

    async def close(self) -> None:
        return None


async def collect(subscription: Subscription) -> list[Sequenced]:
    """Every event of a subscription, until its run's terminal event."""
    out: list[Sequenced] = []
    try:
        async for item in subscription:
            out.append(item)
    finally:
        await subscription.aclose()
    return out


class Domain:
    """The domain, runs and storage of one server, in process, on the SQLite file ``url``.

    With ``redis_url``, the parts replicas share go through that Redis (runs/shared.py): several
    ``Domain``s on one database and one Redis are replicas of one deployment.
    """

    def __init__(
        self,
        url: str,
        *,
        max_replies_per_user: int = 4,
        checkpoint_s: float = 0.05,
        retention_s: float = 600.0,
        lease_s: float = 15.0,
        limits: ChatLimits | None = None,
        max_steps: int = 4,
        tool_wait_s: float = 30.0,
        allowed_hosts: Sequence[str] = ("127.0.0.1",),
        redis_url: str | None = None,
        read_cache_s: float = 0.0,
    ) -> None:
        self.db = Database(url)
        self.provider = ScriptedProvider()
        self._options = SharedOptions(
            redis_url, retention_s, 64 * 1024 * 1024, tool_wait_s, lease_s, timeout_s=1.0
        )
        self._checkpoint_s = checkpoint_s
        self._limits = limits
        self._max_steps = max_steps
        self._tool_wait_s = tool_wait_s
        self._read_cache_s = read_cache_s
        self._resources = AsyncExitStack()
        self.content = SqlContentStore(self.db)
        self.agents = AgentStore(self.db)
        self.sessions = SessionStore(self.db)
        self.messages = MessageStore(self.db, self.content)
        self.replicas = ReplicaStore(self.db)
        self.sweeper = RunSweeper(self.replicas, self.messages, lease_s=lease_s)
        self.usage = UsageStore(self.db)
        #: The server's default quota (what PARLEY_QUOTA_* and the admin settings give).
        self.default_quota = Quota(max_concurrent_replies=max_replies_per_user)
        #: Each user's own quota (what an admin set), by user id.
        self.user_quotas: dict[str, Quota] = {}
        self.models = ModelRegistry({"scripted": self.provider}, {}, MODEL)
        guard = AddressGuard(allowed_hosts)
        self.toolboxes = Toolboxes(
            HttpToolRunner(guard, timeout_s=5, max_response_bytes=64 * 1024),
            McpTools(guard, ttl_s=60, timeout_s=5),
        )

    async def start(self) -> Domain:
        """Build the shared parts (Redis or in process) and what needs them, then start."""
        shared: Shared = await build_shared(
            self._options,
            self._resources,
            totals_since=self.usage.day_totals,
            default_quota=lambda: self.default_quota,
        )
        self.shared = shared
        self.log = shared.log
        self.admission = shared.admission
        self.quotas = shared.quotas
        self.callers = ReadCache[Caller | None]("user", shared.invalidations, ttl_s=self._read_cache_s)
        self.users = UserStore(self.db, self.callers)
        agents = ReadCache[Agent | None]("agent", shared.invalidations, ttl_s=self._read_cache_s)
        self.agents = AgentStore(self.db, agents)
        self.runs = RunManager(
            self.messages, self.log, checkpoint_interval_s=self._checkpoint_s, signals=shared.signals
        )
        self.chat = ChatEngine(
            self.sessions,
            self.messages,
            self.models,
            self.runs,
            self.admission,
            self.quotas,
            self.sweeper,
            limits=self._limits or ChatLimits(),
            tools=ToolSettings(self.toolboxes, self._max_steps, self._tool_wait_s),
        )
        self.replies = Replies(self.sessions, self.messages, self.runs, self.sweeper, shared.signals)
        await self.sweeper.start()
        await shared.signals.start(self.sweeper.replica_id, self.runs)
        return self

    async def close(self) -> None:
        await self.runs.shutdown(0)
        await self.toolboxes.aclose()
        await self.sweeper.stop()
        await self._resources.aclose()
        await self.db.dispose()

    async def new_session(
        self,
        instructions: str = "Be brief.",
        *,
        max_output_tokens: int = 0,
        tools: Sequence[ToolSpec] = (),
        model: str = MODEL,
    ) -> Session:
        """A new user with an agent on ``model`` (the scripted one by default; with ``tools``) and a
        session with it."""
        now = datetime.now(UTC)
        user = User(new_id(), f"u-{new_id()[-12:]}", "Tester", now, now)
        await self.users.create_user(user, "not-a-hash")
        agent = Agent(
            new_id(),
            user.id,
            "Agent",
            instructions,
            model,
            None,
            max_output_tokens,
            "",
            "",
            now,
            now,
            tuple(tools),
        )
        await self.agents.create(agent)
        session = Session(new_id(), user.id, agent.id, "", MAIN_BRANCH_ID, now, now)
        main = Branch(session.id, MAIN_BRANCH_ID, "main", None, None, 0, now, now)
        return await self.sessions.create(session, main)

    def principal(self, user_id: str) -> Principal:
        """The caller ``user_id`` as the auth interceptor would make it (with their own quota)."""
        return Principal(user_id, quota=self.user_quotas.get(user_id, Quota()))

    async def send(self, session: Session, text: str, **options: Any) -> Subscription:
        """``ChatEngine.send`` as the session's owner."""
        return await self.chat.send(self.principal(session.owner_id), session.id, text, **options)

    async def regenerate(self, session: Session, reply_id: str, **options: Any) -> Subscription:
        """``ChatEngine.regenerate`` as the session's owner."""
        return await self.chat.regenerate(self.principal(session.owner_id), session.id, reply_id, **options)

    async def resume(self, session: Session, reply_id: str, after: int = 0) -> Subscription:
        """``ChatEngine.resume`` as the session's owner, without a deadline."""
        return await self.replies.resume(session.owner_id, session.id, reply_id, after, deadline=None)


async def first(subscription: Subscription, n: int) -> tuple[list[Sequenced], AsyncIterator[Sequenced]]:
    """The first ``n`` events of a subscription, leaving it open."""
    out = []
    async for item in subscription:
        out.append(item)
        if len(out) == n:
            break
    return out, subscription
