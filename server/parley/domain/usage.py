"""What was spent (UsageService.GetUsage): by user, agent, session or branch, over a time range.

A user's and an agent's figures come from the usage records, which outlive deleted sessions
(they are what quotas count). A session's are its records too. A branch's follow the branch's
own path: the replies on it (a shared prefix counts once for every branch that has it), and the
messages on it created in the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from parley.domain.accounts import Principal
from parley.domain.clock import Clock, utc_now
from parley.domain.errors import InvalidArgument, NotFound, Reason
from parley.domain.models import Role
from parley.domain.names import parse_agent, parse_branch, parse_session
from parley.storage.messages import MessageStore
from parley.storage.sql.agents import AgentStore
from parley.storage.sql.sessions import SessionStore
from parley.storage.sql.tables import usage_records
from parley.storage.sql.usage import UsageStore, UsageTotals

__all__ = ["Usage", "UsageSummary"]

_USER = "users/"


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """``totals`` of ``parent`` (``users/me`` resolved to the caller) over [start, end)."""

    parent: str
    totals: UsageTotals
    start_time: datetime | None
    end_time: datetime


class Usage:
    """Reads usage figures; the caller sees their own, an admin any user's."""

    def __init__(
        self,
        usage: UsageStore,
        agents: AgentStore,
        sessions: SessionStore,
        messages: MessageStore,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._usage = usage
        self._agents = agents
        self._sessions = sessions
        self._messages = messages
        self._now = clock

    async def get(
        self, principal: Principal, parent: str, start: datetime | None, end: datetime | None
    ) -> UsageSummary:
        """The usage of ``parent`` (``users/me``, ``users/{id}``, ``agents/{id}``,
        ``sessions/{id}`` or ``sessions/{id}/branches/{id}``) created in [start, end).

        Raises ``InvalidArgument`` for a malformed parent or an end before the start, ``NotFound``
        for a resource that is absent or another user's (other users: admins only).
        """
        end = end or self._now()
        if start is not None and start > end:
            raise InvalidArgument.field("end_time", "must not be before start_time")
        c = usage_records.c
        if parent.startswith(_USER):
            user_id = parent.removeprefix(_USER)
            if user_id == "me":
                user_id = principal.user_id
            if user_id != principal.user_id and not principal.is_admin:
                raise NotFound.resource(parent)
            totals = await self._usage.totals(c.user_id == user_id, start, end)
            return UsageSummary(f"{_USER}{user_id}", totals, start, end)
        if parent.startswith("agents/"):
            agent_id = parse_agent(parent, "parent")
            if await self._agents.get(principal.user_id, agent_id) is None:
                raise NotFound.resource(parent)
            totals = await self._usage.totals(c.agent_id == agent_id, start, end)
            return UsageSummary(parent, totals, start, end)
        if "/branches/" in parent:
            session_id, branch_id = parse_branch(parent, "parent")
            target = await self._sessions.send_target(principal.user_id, session_id, branch_id)
            if target is None or target.branch is None:
                raise NotFound.resource(parent)
            head = target.branch.head_id
            path = await self._messages.path_rows(session_id, head) if head else []
            in_range = [
                r for r in path if (start is None or r["create_time"] >= start) and r["create_time"] < end
            ]
            replies = [r["id"] for r in path if r["role"] == Role.ASSISTANT.value]
            totals = await self._usage.totals(c.session_id == session_id, start, end, message_ids=replies)
            return UsageSummary(parent, _with_messages(totals, len(in_range)), start, end)
        if parent.startswith("sessions/"):
            session_id = parse_session(parent, "parent")
            if await self._sessions.get(principal.user_id, session_id) is None:
                raise NotFound.resource(parent)
            totals = await self._usage.totals(c.session_id == session_id, start, end)
            return UsageSummary(parent, totals, start, end)
        raise InvalidArgument.field(
            "parent",
            "expected users/me, users/{user}, agents/{agent}, sessions/{session} or "
            "sessions/{session}/branches/{branch}",
            reason=Reason.INVALID_RESOURCE_NAME,
        )


def _with_messages(totals: UsageTotals, message_count: int) -> UsageTotals:
    return UsageTotals(
        totals.input_tokens,
        totals.output_tokens,
        totals.audio_input_s,
        totals.audio_output_s,
        message_count,
        totals.completed,
        totals.incomplete,
        totals.failed,
    )
