"""Usage records (table ``usage_records``): one row per reply, what quotas and GetUsage count.

A row is written with its reply when the run starts (prompt tokens, the recording's seconds,
the messages the send created) and completed when the reply is stored (tokens as stored, speech
seconds, status). Rows belong to the user (deleted with the account) but not to the session or
agent: deleting a session does not give its tokens back to the day's quota.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select

from parley.domain.models import MessageStatus
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import usage_records

__all__ = ["DayTotals", "UsageRecord", "UsageStore", "UsageTotals"]


@dataclass(slots=True)
class DayTotals:
    """What a user spent in one UTC day: tokens, and audio seconds (in plus out)."""

    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """The usage row of reply ``message_id``, as written when its run starts."""

    message_id: str
    user_id: str
    agent_id: str
    session_id: str
    create_time: datetime
    input_tokens: int
    audio_input_s: float
    message_count: int

    def values(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "create_time": self.create_time,
            "input_tokens": self.input_tokens,
            "output_tokens": 0,
            "audio_input_s": self.audio_input_s,
            "audio_output_s": 0.0,
            "message_count": self.message_count,
            "status": MessageStatus.IN_PROGRESS.value,
        }


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums over usage rows. Durations in seconds."""

    input_tokens: int = 0
    output_tokens: int = 0
    audio_input_s: float = 0.0
    audio_output_s: float = 0.0
    message_count: int = 0
    completed: int = 0
    incomplete: int = 0
    failed: int = 0


class UsageStore:
    """Sums of ``usage_records``; the rows themselves are written by ``MessageStore``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def day_totals(self, user_id: str, since: datetime) -> DayTotals:
        """What quotas count for ``user_id`` since ``since``: tokens, audio seconds in and out."""
        totals = await self.totals(usage_records.c.user_id == user_id, since, None)
        return DayTotals(
            totals.input_tokens, totals.output_tokens, totals.audio_input_s + totals.audio_output_s
        )

    async def totals(
        self,
        scope: ColumnElement[bool],
        start: datetime | None,
        end: datetime | None,
        *,
        message_ids: Sequence[str] | None = None,
    ) -> UsageTotals:
        """Sums of the rows matching ``scope`` created in [start, end) (and, if given, whose reply
        is one of ``message_ids``). One query."""
        c = usage_records.c
        status = c.status
        q = select(
            func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(c.audio_input_s), 0.0).label("audio_input_s"),
            func.coalesce(func.sum(c.audio_output_s), 0.0).label("audio_output_s"),
            func.coalesce(func.sum(c.message_count), 0).label("message_count"),
            func.count().filter(status == MessageStatus.COMPLETE.value).label("completed"),
            func.count().filter(status == MessageStatus.INCOMPLETE.value).label("incomplete"),
            func.count().filter(status == MessageStatus.FAILED.value).label("failed"),
        ).where(scope)
        if start is not None:
            q = q.where(c.create_time >= start)
        if end is not None:
            q = q.where(c.create_time < end)
        if message_ids is not None:
            q = q.where(c.message_id.in_(list(message_ids)))
        row = await self._db.first(q)
        if row is None:
            return UsageTotals()
        return UsageTotals(
            int(row["input_tokens"]),
            int(row["output_tokens"]),
            float(row["audio_input_s"]),
            float(row["audio_output_s"]),
            int(row["message_count"]),
            int(row["completed"]),
            int(row["incomplete"]),
            int(row["failed"]),
        )
