"""Whole sessions in and out of storage: the import's one transaction, archive bookkeeping.

An import writes the content of every message first (in batches, to the content store), then
the agent copy, the session, the message tree and the branches in **one SQL transaction**. If
anything fails, the content written under the new session id is deleted again, so nothing is
half-imported: a failed import leaves at most what a crash between the two steps leaves (an
unreachable content document), never a visible session.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, insert, select, update

from parley.domain.models import Agent, Branch, Message, MessageStatus, Session
from parley.storage.content.base import ContentStore
from parley.storage.message_rows import content_of, tree_values
from parley.storage.sql.agents import agent_values
from parley.storage.sql.engine import Database
from parley.storage.sql.sessions import branch_values, session_values
from parley.storage.sql.tables import agents, branches, messages, sessions

__all__ = ["ArchiveRecord", "TransferStore"]

#: Rows (and content documents) per statement of an import.
BATCH = 500

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """Where a session's archived export file lives: object ``key``, ``size`` in bytes,
    ``sha256`` (hex) of the file, and when it was archived."""

    key: str
    size: int
    sha256: str
    time: datetime


_UNFINISHED = (MessageStatus.IN_PROGRESS.value, MessageStatus.REQUIRES_ACTION.value)


class TransferStore:
    """Imports sessions and keeps the archive columns of ``sessions``."""

    def __init__(self, db: Database, content: ContentStore) -> None:
        self._db = db
        self._content = content

    async def insert_session(
        self,
        session: Session,
        agent: Agent | None,
        tree: Sequence[Message],
        session_branches: Sequence[Branch],
    ) -> None:
        """Store a whole new session: ``tree`` parents first, ``agent`` (a new agent, or None to
        use the session's existing one). All or nothing (see the module docstring)."""
        try:
            for start in range(0, len(tree), BATCH):
                batch = tree[start : start + BATCH]
                await self._content.put_many(session.id, {m.id: content_of(m) for m in batch})
            async with self._db.transaction() as s:
                if agent is not None:
                    await s.execute(insert(agents).values(**agent_values(agent)))
                await s.execute(insert(sessions).values(**session_values(session)))
                for start in range(0, len(tree), BATCH):
                    await s.execute(insert(messages), [tree_values(m) for m in tree[start : start + BATCH]])
                await s.execute(insert(branches), [branch_values(b) for b in session_branches])
        except BaseException:
            with contextlib.suppress(Exception):
                await self._content.delete_session(session.id)
            raise

    async def archive_of(self, session_id: str) -> ArchiveRecord | None:
        """The session's archive record, or None when it is not archived."""
        row = await self._db.first(
            select(
                sessions.c.archive_key,
                sessions.c.archive_size,
                sessions.c.archive_sha256,
                sessions.c.archive_time,
            ).where(sessions.c.id == session_id)
        )
        if row is None or row["archive_key"] is None:
            return None
        return ArchiveRecord(
            row["archive_key"], row["archive_size"], row["archive_sha256"], row["archive_time"]
        )

    async def has_unfinished(self, session_id: str) -> bool:
        """Whether a reply of the session is still IN_PROGRESS or REQUIRES_ACTION."""
        row = await self._db.first(
            select(messages.c.id)
            .where(messages.c.session_id == session_id, messages.c.status.in_(_UNFINISHED))
            .limit(1)
        )
        return row is not None

    async def mark_archived(
        self, session_id: str, record: ArchiveRecord, last_message_id: str | None
    ) -> bool:
        """Record the archive on the session, if it is not archived yet, no message newer than
        ``last_message_id`` (the newest the archived file holds) was stored since, and no reply
        is unfinished: one compare-and-set. False if any of that does not hold."""
        newer = messages.c.id > last_message_id if last_message_id is not None else messages.c.id.is_not(None)
        changed = exists().where(
            messages.c.session_id == session_id,
            (newer | messages.c.status.in_(_UNFINISHED)),
        )
        return (
            await self._db.execute(
                update(sessions)
                .where(and_(sessions.c.id == session_id, sessions.c.archive_key.is_(None), ~changed))
                .values(
                    archive_key=record.key,
                    archive_size=record.size,
                    archive_sha256=record.sha256,
                    archive_time=record.time,
                )
            )
            == 1
        )

    async def mark_restored(self, session_id: str, key: str, now: datetime) -> bool:
        """Clear the archive record (compare-and-set on ``key``) and note the restore time;
        False if another call did."""
        return (
            await self._db.execute(
                update(sessions)
                .where(sessions.c.id == session_id, sessions.c.archive_key == key)
                .values(
                    archive_key=None,
                    archive_size=None,
                    archive_sha256=None,
                    archive_time=None,
                    restore_time=now,
                )
            )
            == 1
        )

    async def idle_sessions(self, before: datetime, limit: int) -> Sequence[tuple[str, str]]:
        """``(owner_id, session_id)`` of up to ``limit`` sessions not archived, not changed and
        not restored since ``before``, least recently changed first."""
        rows = await self._db.all(
            select(sessions.c.owner_id, sessions.c.id)
            .where(
                sessions.c.archive_key.is_(None),
                sessions.c.update_time < before,
                sessions.c.restore_time.is_(None) | (sessions.c.restore_time < before),
                exists().where(messages.c.session_id == sessions.c.id),
            )
            .order_by(sessions.c.update_time)
            .limit(limit)
        )
        return [(r["owner_id"], r["id"]) for r in rows]
