"""Short-lived per-process caches of what many calls read, invalidated across replicas.

Two reads are cached: the caller of every authenticated call (its user, and whether its login
was revoked: ``UserStore.caller``) and agents (``AgentStore.get``, e.g. GetAgent). Sessions and
branches are not: a send reads them with the agent in one query, and a branch head must be fresh.

Staleness bound: a change made through this process is seen at once (the write forgets the
entry before it returns); a change made through another replica is seen as soon as its
invalidation arrives (storage/invalidation.py: Redis pub/sub, milliseconds), and at the latest
after ``ttl_s`` seconds (``PARLEY_READ_CACHE_SECONDS``) if that message was lost. A read that
raced a write is not cached (each group carries a generation that every invalidation bumps).
Entries are bounded by ``max_entries`` (least recently used groups dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from parley.storage.invalidation import Invalidations

__all__ = ["ReadCache"]

T = TypeVar("T")


class ReadCache(Generic[T]):
    """Caches ``load()`` per (group, key) for ``ttl_s`` seconds (see the module docstring).

    Args:
        namespace: what the groups are (``user``, ``agent``): invalidations are published as
            ``{namespace}:{group}``.
        ttl_s: seconds an entry lives; 0 disables caching.
    """

    def __init__(
        self,
        namespace: str,
        bus: Invalidations,
        *,
        ttl_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prefix = f"{namespace}:"
        self._bus = bus
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        #: group -> key -> (expiry, value); groups least recently used first.
        self._entries: OrderedDict[str, dict[str, tuple[float, T]]] = OrderedDict()
        self._size = 0
        self._generations: dict[str, int] = {}
        self._epoch = 0
        bus.subscribe(self._heard)

    async def get(self, group: str, key: str, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or ``load()``'s (cached unless an invalidation came meanwhile)."""
        keys = self._entries.get(group)
        now = self._clock()
        hit = keys.get(key) if keys is not None else None
        if hit is not None and hit[0] > now:
            self._entries.move_to_end(group)
            return hit[1]
        before = (self._epoch, self._generations.get(group, 0))
        value = await load()
        if self._ttl > 0 and before == (self._epoch, self._generations.get(group, 0)):
            keys = self._entries.setdefault(group, {})
            self._size += key not in keys
            keys[key] = (now + self._ttl, value)
            self._entries.move_to_end(group)
            while self._size > self._max and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)
        return value

    async def changed(self, group: str) -> None:
        """``group`` changed here: forget it now, and tell the other replicas."""
        self._forget(group)
        await self._bus.publish(self._prefix + group)

    def _heard(self, changed: str | None) -> None:
        if changed is None:
            self._epoch += 1
            self._entries.clear()
            self._generations.clear()
            self._size = 0
        elif changed.startswith(self._prefix):
            self._forget(changed[len(self._prefix) :])

    def _forget(self, group: str) -> None:
        self._generations[group] = self._generations.get(group, 0) + 1
        self._size -= len(self._entries.pop(group, {}))
