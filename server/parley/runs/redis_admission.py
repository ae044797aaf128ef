"""Admission shared by replicas: per-user reply slots and branch locks in Redis.

- **Slots** are members of the sorted set ``parley:replies:{user}``, scored by when they expire
  (Redis server time + ``lease_s``). One Lua script drops expired members, counts, and adds the
  new one only under the limit, so the limit holds exactly however many replicas admit at once.
  A replica refreshes its slots every ``lease_s / 3`` seconds while their runs live; the slots of
  a replica that died expire after ``lease_s`` (``PARLEY_RUN_LEASE_SECONDS``).
- **Branch locks** are redis-py ``Lock``s (``SET NX PX`` with a token; released only by their
  holder), ``parley:branch:{session}:{branch}``, with the same lease, refreshed the same way.
  Waiters of one replica queue on a process lock first, so only one of them polls Redis.

A lock that expired under a stalled replica cannot corrupt a branch: the head moves only by a
compare-and-set in SQL (storage/messages.py), so a send that lost the race is ABORTED
(BRANCH_CONFLICT) instead. Redis unreachable: ``Unavailable`` (REDIS_UNAVAILABLE) before
anything is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from parley.domain.errors import Reason, Unavailable
from parley.domain.names import new_id
from parley.runs.admission import InProcessAdmission, Ticket, too_many_replies

__all__ = ["RedisAdmission", "redis_unavailable"]

log = logging.getLogger(__name__)

#: KEYS[1] the user's slots; ARGV: member, limit (0: none), lease ms. Returns the new count, or
#: -1 when the limit is reached.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[2])
if limit > 0 and n >= limit then return -1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return n + 1
"""

#: KEYS: slot sets; ARGV[1] lease ms, then one member per key. Pushes each member's expiry on.
_REFRESH_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
"""


def redis_unavailable(exc: Exception | None = None) -> Unavailable:
    """The error of a call that needs Redis while it cannot be reached."""
    cause = f" ({type(exc).__name__})" if exc is not None else ""
    return Unavailable(f"Redis cannot be reached{cause}; retry later", reason=Reason.REDIS_UNAVAILABLE)


def slots_key(owner_id: str) -> str:
    return f"parley:replies:{owner_id}"


class _RedisTicket:
    def __init__(
        self, admission: RedisAdmission, owner_id: str, member: str, lock: Lock, local: asyncio.Lock
    ) -> None:
        self.admission = admission
        self.owner_id = owner_id
        self.member = member
        self.lock = lock
        self.local = local
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.local.locked():
            self.local.release()
        self.admission.released(self)


class RedisAdmission:
    """``Admission`` across replicas (see the module docstring).

    Args:
        lease_s: seconds a slot or lock outlives its replica's last refresh.
    """

    def __init__(self, redis: Redis, *, lease_s: float) -> None:
        self._redis = redis
        self._lease_ms = int(lease_s * 1000)
        self._local = InProcessAdmission()
        self._take = redis.register_script(_TAKE_SLOT)
        self._refresh = redis.register_script(_REFRESH_SLOTS)
        self._held: set[_RedisTicket] = set()
        self._releasing: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        #: False while Redis does not answer (runs/shared.py's watch): sends fail at once.
        self.redis_up = True

    def replies_of(self, owner_id: str) -> int:
        return self._local.replies_of(owner_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_loop(), name="admission lease refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._releasing:
            await asyncio.wait(self._releasing, timeout=2.0)

    async def admit(self, owner_id: str, session_id: str, branch_id: str, *, limit: int) -> Ticket:
        if not self.redis_up:
            raise redis_unavailable()
        member = new_id()
        try:
            count = await self._take(keys=[slots_key(owner_id)], args=[member, limit, self._lease_ms])
        except RedisError as exc:
            raise redis_unavailable(exc) from exc
        if int(count) < 0:
            raise too_many_replies(limit)
        self._local.take_slot(owner_id, 0)
        local = self._local.branch_lock(session_id, branch_id)
        lock = Lock(
            self._redis,
            f"parley:branch:{session_id}:{branch_id}",
            timeout=self._lease_ms / 1000,
            sleep=0.05,
        )
        try:
            await local.acquire()
            try:
                await lock.acquire()
            except RedisError as exc:
                raise redis_unavailable(exc) from exc
        except BaseException:
            if local.locked():
                local.release()
            self._local.free_slot(owner_id)
            self._spawn(self._free(owner_id, member, None))
            raise
        ticket = _RedisTicket(self, owner_id, member, lock, local)
        self._held.add(ticket)
        return ticket

    def released(self, ticket: _RedisTicket) -> None:
        self._held.discard(ticket)
        self._local.free_slot(ticket.owner_id)
        self._spawn(self._free(ticket.owner_id, ticket.member, ticket.lock))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _free(self, owner_id: str, member: str, lock: Lock | None) -> None:
        """Give back a slot and a lock; if Redis is down they expire with their lease."""
        try:
            if lock is not None:
                with contextlib.suppress(LockError):
                    await lock.release()
            await self._redis.zrem(slots_key(owner_id), member)
        except RedisError as exc:
            log.warning("admission: slot of %s not released (%s); it expires with its lease", owner_id, exc)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            held = list(self._held)
            if not held:
                continue
            try:
                keys = [slots_key(t.owner_id) for t in held]
                await self._refresh(keys=keys, args=[self._lease_ms, *[t.member for t in held]])
                for ticket in held:
                    with contextlib.suppress(LockError):
                        await ticket.lock.reacquire()
            except RedisError as exc:
                log.warning("admission: could not refresh %d lease(s): %s", len(held), exc)
