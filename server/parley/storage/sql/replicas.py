"""Server processes (``replicas``) and the runs they own: heartbeats, and finding orphaned runs.

A replica inserts its row at start-up, refreshes ``heartbeat_time`` every few seconds and
deletes the row on a graceful stop. A run whose replica row is gone or has not been refreshed
since a cutoff belongs to no live process: a sweep marks its reply INCOMPLETE (runs/sweep.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from parley.storage.sql.engine import Database
from parley.storage.sql.tables import replicas, runs

__all__ = ["ReplicaStore"]


class ReplicaStore:
    """SQL access to ``replicas`` and to the ownership columns of ``runs``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def register(self, replica_id: str, host: str, pid: int, now: datetime) -> None:
        await self._db.execute(
            insert(replicas).values(id=replica_id, host=host, pid=pid, start_time=now, heartbeat_time=now)
        )

    async def heartbeat(self, replica_id: str, now: datetime) -> bool:
        """Refresh the replica's lease; False if its row is gone (another replica swept it)."""
        result = await self._db.execute(
            update(replicas).where(replicas.c.id == replica_id).values(heartbeat_time=now)
        )
        return result > 0

    async def deregister(self, replica_id: str) -> None:
        await self._db.execute(delete(replicas).where(replicas.c.id == replica_id))

    async def is_alive(self, replica_id: str, cutoff: datetime) -> bool:
        """Whether ``replica_id`` heartbeat after ``cutoff``."""
        row = await self._db.first(
            select(replicas.c.id).where(replicas.c.id == replica_id, replicas.c.heartbeat_time >= cutoff)
        )
        return row is not None

    async def orphaned_runs(self, cutoff: datetime, limit: int = 500) -> Sequence[tuple[str, str]]:
        """(session id, message id) of unfinished runs whose replica has not heartbeat since
        ``cutoff`` (or is gone), oldest first. Served by the index on ``runs.replica_id``."""
        live = select(replicas.c.id).where(replicas.c.heartbeat_time >= cutoff)
        q = (
            select(runs.c.session_id, runs.c.id)
            .where(runs.c.replica_id.is_not(None), runs.c.replica_id.not_in(live))
            .order_by(runs.c.id)
            .limit(limit)
        )
        rows = await self._db.all(q)
        return [(r["session_id"], r["id"]) for r in rows]

    async def forget_dead(self, cutoff: datetime) -> None:
        """Delete rows of replicas that have not heartbeat since ``cutoff``."""
        await self._db.execute(delete(replicas).where(replicas.c.heartbeat_time < cutoff))
