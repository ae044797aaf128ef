"""Running summaries of trimmed history, cached in SQL (table ``summaries``).

A summary is keyed by its session and its *cut*: the newest message it covers. Messages never
change, so the path up to a cut never changes either, and a summary stays valid for as long as
that message exists (rows cascade away with the message or the session).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from parley.storage.sql.engine import Database
from parley.storage.sql.tables import summaries

__all__ = ["Summary", "SummaryStore"]


@dataclass(frozen=True, slots=True)
class Summary:
    """``text`` summarizes the session's path up to and including ``message_id``."""

    session_id: str
    message_id: str
    text: str
    model: str
    create_time: datetime


class SummaryStore:
    """Reads and writes ``summaries`` rows; each method is one statement."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def newest(self, session_id: str, path: Sequence[str]) -> Summary | None:
        """The summary whose cut is the newest of the message ids ``path`` (oldest first), if any."""
        if not path:
            return None
        rows = await self._db.all(
            select(summaries).where(
                summaries.c.session_id == session_id, summaries.c.message_id.in_(list(path))
            )
        )
        found = {r["message_id"]: r for r in rows}
        for message_id in reversed(path):
            row = found.get(message_id)
            if row is not None:
                return Summary(
                    row["session_id"], row["message_id"], row["text"], row["model"], row["create_time"]
                )
        return None

    async def put(self, summary: Summary) -> None:
        """Store ``summary``; a concurrent writer's summary for the same cut wins silently."""
        with contextlib.suppress(IntegrityError):
            await self._db.execute(
                insert(summaries).values(
                    session_id=summary.session_id,
                    message_id=summary.message_id,
                    text=summary.text,
                    model=summary.model,
                    create_time=summary.create_time,
                )
            )
