"""Sessions and their branches (tables ``sessions`` and ``branches``).

Methods taking ``owner_id`` only ever see that user's rows, so "someone else's" and "absent" are
the same ``None``/``False`` to callers. Each public method is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import RowMapping

from parley.domain.models import Agent, Branch, MessageStatus, Session
from parley.storage.sql.agents import agent_from_row
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import agents, branches, messages, sessions

__all__ = ["SendTarget", "SessionStore", "branch_values", "session_values"]


@dataclass(frozen=True, slots=True)
class SendTarget:
    """What a send reads before it stores anything: the session, its agent, the branch
    (``None`` when the session has no branch of that id) and the status of the branch's head
    message (``None`` for an empty branch): REQUIRES_ACTION means a reply there waits for tool
    outputs, whichever replica runs it."""

    session: Session
    agent: Agent
    branch: Branch | None
    head_status: MessageStatus | None = None


def _session(row: RowMapping) -> Session:
    return Session(
        row["id"],
        row["owner_id"],
        row["agent_id"],
        row["title"],
        row["active_branch_id"],
        row["create_time"],
        row["update_time"],
        row.get("archive_time"),
    )


def _branch(row: RowMapping) -> Branch:
    return Branch(
        session_id=row["session_id"],
        id=row["id"],
        display_name=row["display_name"],
        head_id=row["head_id"],
        fork_point_id=row["fork_point_id"],
        message_count=row["message_count"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def branch_values(branch: Branch) -> dict[str, Any]:
    return {
        "session_id": branch.session_id,
        "id": branch.id,
        "display_name": branch.display_name,
        "head_id": branch.head_id,
        "message_count": branch.message_count,
        "fork_point_id": branch.fork_point_id,
        "create_time": branch.create_time,
        "update_time": branch.update_time,
    }


def session_values(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "owner_id": session.owner_id,
        "agent_id": session.agent_id,
        "title": session.title,
        "active_branch_id": session.active_branch_id,
        "create_time": session.create_time,
        "update_time": session.update_time,
    }


def _prefixed(row: RowMapping, prefix: str) -> dict[str, Any]:
    return {key[len(prefix) :]: value for key, value in row.items() if key.startswith(prefix)}


class SessionStore:
    """SQL access to sessions and branches."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- sessions ------------------------------------------------------------------------------

    async def create(self, session: Session, main: Branch) -> Session:
        """Insert a session together with its first branch, atomically."""
        async with self._db.transaction() as s:
            await s.execute(insert(sessions).values(**session_values(session)))
            await s.execute(insert(branches).values(**branch_values(main)))
        return session

    async def get(self, owner_id: str, session_id: str) -> Session | None:
        row = await self._db.first(
            select(sessions).where(sessions.c.id == session_id, sessions.c.owner_id == owner_id)
        )
        return None if row is None else _session(row)

    async def send_target(self, owner_id: str, session_id: str, branch_id: str | None) -> SendTarget | None:
        """The session, its agent and the branch ``branch_id`` (``None``: the active one), in one
        query; ``None`` when the session is absent or another user's."""
        params = {"session_id": session_id, "owner_id": owner_id}
        if branch_id is None:
            row = await self._db.first(_SEND_TARGET_ACTIVE, params)
        else:
            row = await self._db.first(_SEND_TARGET_BRANCH, {**params, "branch_id": branch_id})
        if row is None:
            return None
        branch = _prefixed(row, "b_")
        return SendTarget(
            session=_session(_prefixed(row, "s_")),  # type: ignore[arg-type]
            agent=agent_from_row(_prefixed(row, "a_")),  # type: ignore[arg-type]
            branch=_branch(branch) if branch["id"] is not None else None,  # type: ignore[arg-type]
            head_status=MessageStatus(row["head_status"]) if row["head_status"] is not None else None,
        )

    async def ids_of_owner(self, owner_id: str) -> Sequence[str]:
        """Ids of every session of ``owner_id``."""
        rows = await self._db.all(select(sessions.c.id).where(sessions.c.owner_id == owner_id))
        return [r["id"] for r in rows]

    async def list(
        self, owner_id: str, agent_id: str | None, after: str | None, limit: int
    ) -> Sequence[Session]:
        """Up to ``limit`` sessions, newest first, before the id ``after``."""
        q = select(sessions).where(sessions.c.owner_id == owner_id)
        if agent_id is not None:
            q = q.where(sessions.c.agent_id == agent_id)
        if after is not None:
            q = q.where(sessions.c.id < after)
        rows = await self._db.all(q.order_by(sessions.c.id.desc()).limit(limit))
        return [_session(r) for r in rows]

    async def update(self, owner_id: str, session_id: str, title: str, now: datetime) -> Session | None:
        row = await self._db.first(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.owner_id == owner_id)
            .values(title=title, update_time=now)
            .returning(*sessions.c)
        )
        return None if row is None else _session(row)

    async def delete(self, owner_id: str, session_id: str) -> bool:
        """Delete the session; its branches and message tree rows cascade."""
        result = await self._db.execute(
            delete(sessions).where(sessions.c.id == session_id, sessions.c.owner_id == owner_id)
        )
        return result > 0

    # --- branches ------------------------------------------------------------------------------

    async def get_branch(self, session_id: str, branch_id: str) -> Branch | None:
        row = await self._db.first(
            select(branches).where(branches.c.session_id == session_id, branches.c.id == branch_id)
        )
        return None if row is None else _branch(row)

    async def create_branch(self, branch: Branch, *, activate: bool = False) -> Branch:
        """Insert ``branch``; with ``activate`` also make it the session's active branch (one
        transaction)."""
        async with self._db.transaction() as s:
            await s.execute(insert(branches).values(**branch_values(branch)))
            if activate:
                await s.execute(
                    update(sessions)
                    .where(sessions.c.id == branch.session_id)
                    .values(active_branch_id=branch.id, update_time=branch.create_time)
                )
        return branch

    async def list_branches(self, session_id: str, after: str | None, limit: int) -> Sequence[Branch]:
        """Up to ``limit`` branches oldest first (by create time, then id), after the branch ``after``."""
        q = select(branches).where(branches.c.session_id == session_id)
        if after is not None:
            cursor_time = (
                select(branches.c.create_time)
                .where(branches.c.session_id == session_id, branches.c.id == after)
                .scalar_subquery()
            )
            q = q.where(tuple_(branches.c.create_time, branches.c.id) > tuple_(cursor_time, after))
        rows = await self._db.all(q.order_by(branches.c.create_time, branches.c.id).limit(limit))
        return [_branch(r) for r in rows]

    async def count_branches(self, session_id: str) -> int:
        row = await self._db.first(
            select(func.count().label("n")).select_from(branches).where(branches.c.session_id == session_id)
        )
        return int(row["n"]) if row else 0

    async def set_active_branch(
        self, owner_id: str, session_id: str, branch_id: str, now: datetime
    ) -> Session | None:
        """Make ``branch_id`` active; the updated session, or ``None`` if the session is absent or
        another user's."""
        row = await self._db.first(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.owner_id == owner_id)
            .values(active_branch_id=branch_id, update_time=now)
            .returning(*sessions.c)
        )
        return None if row is None else _session(row)

    async def delete_branch(self, session_id: str, branch_id: str) -> bool:
        result = await self._db.execute(
            delete(branches).where(branches.c.session_id == session_id, branches.c.id == branch_id)
        )
        return result > 0


def _send_target_query(branch_key: ColumnElement[bool]) -> Select[Any]:
    """Session + agent + branch (+ its head's status) of one owner's session, the branch picked by
    ``branch_key``; bound parameters ``session_id``, ``owner_id`` (and ``branch_id``)."""
    return (
        select(
            *(c.label(f"s_{c.name}") for c in sessions.c),
            *(c.label(f"a_{c.name}") for c in agents.c),
            *(c.label(f"b_{c.name}") for c in branches.c),
            messages.c.status.label("head_status"),
        )
        .select_from(
            sessions.join(agents, agents.c.id == sessions.c.agent_id)
            .outerjoin(branches, (branches.c.session_id == sessions.c.id) & branch_key)
            .outerjoin(messages, messages.c.id == branches.c.head_id)
        )
        .where(sessions.c.id == bindparam("session_id"), sessions.c.owner_id == bindparam("owner_id"))
    )


# Built once: a send reads its target with one of these (building and keying the statement cost
# about as much as running it on SQLite).
_SEND_TARGET_ACTIVE = _send_target_query(branches.c.id == sessions.c.active_branch_id)
_SEND_TARGET_BRANCH = _send_target_query(branches.c.id == bindparam("branch_id"))
