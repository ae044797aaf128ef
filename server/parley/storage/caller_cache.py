"""A short-lived cache of what every authenticated call reads: its user and whether its login
was revoked (``UserStore.caller``).

Staleness bound: a change made through this process is seen at once (its write forgets the
user before it returns); a change made through another replica is seen as soon as its
invalidation arrives (Redis pub/sub, milliseconds), and at the latest after ``ttl_s`` seconds
(``PARLEY_AUTH_CACHE_SECONDS``) if that message was lost. A read that raced a write is not
cached (each user's entries carry a generation that every invalidation bumps). Entries are
bounded by ``max_entries`` (least recently used dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from parley.storage.invalidation import Invalidations

__all__ = ["CallerCache"]

T = TypeVar("T")


class CallerCache(Generic[T]):
    """Caches ``load(user_id, family_id)`` for ``ttl_s`` seconds (see the module docstring)."""

    def __init__(
        self,
        bus: Invalidations,
        *,
        ttl_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        #: user id -> login family id -> (expiry, value); users least recently used first.
        self._entries: OrderedDict[str, dict[str, tuple[float, T]]] = OrderedDict()
        self._size = 0
        self._generations: dict[str, int] = {}
        self._epoch = 0
        bus.subscribe(self._invalidated)

    async def get(self, user_id: str, family_id: str, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or ``load()``'s (cached unless an invalidation came meanwhile)."""
        families = self._entries.get(user_id)
        now = self._clock()
        hit = families.get(family_id) if families is not None else None
        if hit is not None and hit[0] > now:
            self._entries.move_to_end(user_id)
            return hit[1]
        before = (self._epoch, self._generations.get(user_id, 0))
        value = await load()
        if self._ttl > 0 and before == (self._epoch, self._generations.get(user_id, 0)):
            families = self._entries.setdefault(user_id, {})
            self._size += family_id not in families
            families[family_id] = (now + self._ttl, value)
            self._entries.move_to_end(user_id)
            while self._size > self._max and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)
        return value

    async def changed(self, user_id: str) -> None:
        """``user_id`` changed here: forget it now, and tell the other replicas."""
        self._invalidated(user_id)
        await self._bus.publish(user_id)

    def _invalidated(self, user_id: str | None) -> None:
        if user_id is None:
            self._epoch += 1
            self._entries.clear()
            self._generations.clear()
            self._size = 0
            return
        self._generations[user_id] = self._generations.get(user_id, 0) + 1
        self._size -= len(self._entries.pop(user_id, {}))
