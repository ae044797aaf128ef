"""Whole sessions into storage: the import's one transaction.

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

from sqlalchemy import insert

from parley.domain.models import Agent, Branch, Message, Session
from parley.storage.content.base import ContentStore
from parley.storage.message_rows import content_of, tree_values
from parley.storage.sql.agents import agent_values
from parley.storage.sql.engine import Database
from parley.storage.sql.sessions import branch_values, session_values
from parley.storage.sql.tables import agents, branches, messages, sessions

__all__ = ["TransferStore"]

#: Rows (and content documents) per statement of an import.
BATCH = 500

log = logging.getLogger(__name__)


class TransferStore:
    """Imports sessions."""

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
