"""Admission of a new run: a per-user slot and the branch's send lock, held until the run ends.

- **Per-user slots** (the user's ``max_concurrent_replies`` quota, by default
  ``PARLEY_MAX_CONCURRENT_REPLIES_PER_USER``): one user cannot queue the shared model; a send
  over the limit is refused (RESOURCE_EXHAUSTED, TOO_MANY_CONCURRENT_REPLIES) before anything is
  stored.
- **Branch locks**: sends to one branch are serialized (docs/design.md, "Runs"); a send to a
  branch whose reply is still being generated waits for that run to end, then appends after it.
  Sends to different branches run concurrently.

Both are in-process: one process serves a SQLite database. Many replicas need them shared
(Redis counters, a database lock): the replicas issue replaces this class.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from parley.domain.errors import Reason, ResourceExhausted

__all__ = ["Admission", "Ticket"]


class Ticket:
    """A granted admission; :meth:`release` (idempotent) frees the slot and the branch lock."""

    def __init__(self, admission: Admission, owner_id: str, lock: asyncio.Lock | None) -> None:
        self._admission = admission
        self._owner_id = owner_id
        self._lock = lock
        self._released = False
        self.on_release: list[Callable[[], None]] = []

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._lock is not None and self._lock.locked():
            self._lock.release()
        self._admission._free_slot(self._owner_id)
        for callback in self.on_release:
            callback()


class Admission:
    """Per-user reply slots and per-branch send locks (see the module docstring)."""

    def __init__(self) -> None:
        self._replies: dict[str, int] = {}
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def replies_of(self, owner_id: str) -> int:
        """Replies of ``owner_id`` admitted and not yet ended."""
        return self._replies.get(owner_id, 0)

    async def admit(self, owner_id: str, session_id: str, branch_id: str, *, limit: int) -> Ticket:
        """Take a slot of ``owner_id`` (``ResourceExhausted`` when ``limit`` replies of theirs
        are generating; 0: no limit), then wait for the branch's lock. Cancelling the wait frees
        the slot."""
        running = self._replies.get(owner_id, 0)
        if limit and running >= limit:
            raise ResourceExhausted(
                f"at most {limit} replies may be generated at once per user; wait for one to finish",
                reason=Reason.TOO_MANY_CONCURRENT_REPLIES,
                metadata={"limit": str(limit)},
            )
        self._replies[owner_id] = running + 1
        key = (session_id, branch_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        try:
            await lock.acquire()
        except BaseException:
            self._free_slot(owner_id)
            raise
        return Ticket(self, owner_id, lock)

    def _free_slot(self, owner_id: str) -> None:
        running = self._replies.get(owner_id, 0)
        if running <= 1:
            self._replies.pop(owner_id, None)
        else:
            self._replies[owner_id] = running - 1
