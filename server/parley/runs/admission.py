"""Admission of a new run: a per-user slot and the branch's send lock, held until the run ends.

- **Per-user slots** (the user's ``max_concurrent_replies`` quota, by default
  ``PARLEY_MAX_CONCURRENT_REPLIES_PER_USER``): one user cannot queue the shared model; a send
  over the limit is refused (RESOURCE_EXHAUSTED, TOO_MANY_CONCURRENT_REPLIES) before anything is
  stored.
- **Branch locks**: sends to one branch are serialized (docs/design.md, "Runs"); a send to a
  branch whose reply is still being generated waits for that run to end, then appends after it.
  Sends to different branches run concurrently.

``Admission`` is the interface. :class:`InProcessAdmission` is the embedded default (one process
serves the database); :class:`~parley.runs.redis_admission.RedisAdmission` shares both across
replicas.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

from parley.domain.errors import Reason, ResourceExhausted

__all__ = ["Admission", "InProcessAdmission", "Ticket", "too_many_replies"]


class Ticket(Protocol):
    """A granted admission."""

    def release(self) -> None:
        """Free the slot and the branch lock (idempotent)."""


class Admission(Protocol):
    """Grants per-user slots and per-branch locks."""

    async def admit(self, owner_id: str, session_id: str, branch_id: str, *, limit: int) -> Ticket:
        """Take a slot of ``owner_id`` (``ResourceExhausted`` TOO_MANY_CONCURRENT_REPLIES when
        ``limit`` replies of theirs are generating; 0: no limit), then wait for the branch's
        lock. Cancelling the wait frees the slot."""
        ...

    def replies_of(self, owner_id: str) -> int:
        """Replies of ``owner_id`` admitted here and not yet ended."""
        ...


def too_many_replies(limit: int) -> ResourceExhausted:
    """The error of a send over the per-user reply limit."""
    return ResourceExhausted(
        f"at most {limit} replies may be generated at once per user; wait for one to finish",
        reason=Reason.TOO_MANY_CONCURRENT_REPLIES,
        metadata={"limit": str(limit)},
    )


class _LocalTicket:
    def __init__(self, admission: InProcessAdmission, owner_id: str, lock: asyncio.Lock | None) -> None:
        self._admission = admission
        self._owner_id = owner_id
        self._lock = lock
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._lock is not None and self._lock.locked():
            self._lock.release()
        self._admission.free_slot(self._owner_id)


class InProcessAdmission:
    """Per-user reply slots and per-branch send locks in this process (see the module docstring)."""

    def __init__(self) -> None:
        self._replies: dict[str, int] = {}
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def replies_of(self, owner_id: str) -> int:
        return self._replies.get(owner_id, 0)

    def branch_lock(self, session_id: str, branch_id: str) -> asyncio.Lock:
        """The process's lock of one branch (kept while anyone holds or waits for it)."""
        key = (session_id, branch_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def take_slot(self, owner_id: str, limit: int) -> None:
        """Count one more reply of ``owner_id``, or raise when ``limit`` are running."""
        running = self._replies.get(owner_id, 0)
        if limit and running >= limit:
            raise too_many_replies(limit)
        self._replies[owner_id] = running + 1

    def free_slot(self, owner_id: str) -> None:
        running = self._replies.get(owner_id, 0)
        if running <= 1:
            self._replies.pop(owner_id, None)
        else:
            self._replies[owner_id] = running - 1

    async def admit(self, owner_id: str, session_id: str, branch_id: str, *, limit: int) -> Ticket:
        self.take_slot(owner_id, limit)
        lock = self.branch_lock(session_id, branch_id)
        try:
            await lock.acquire()
        except BaseException:
            self.free_slot(owner_id)
            raise
        return _LocalTicket(self, owner_id, lock)
