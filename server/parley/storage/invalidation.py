"""Invalidations of per-process caches, across replicas.

A replica that changes something other replicas may hold in a cache (a user's role, quota or
disabled state; a revoked login) publishes the id it changed. :class:`LocalInvalidations` is
the embedded default (one process: nothing to tell). :class:`RedisInvalidations` publishes on
the Redis channel ``parley:invalidate`` and calls every subscriber for each id received; when
its subscription was lost and comes back it calls them with ``None`` ("forget everything"),
since messages sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["CHANNEL", "Invalidations", "LocalInvalidations", "RedisInvalidations"]

log = logging.getLogger(__name__)

CHANNEL = "parley:invalidate"

#: Called with the changed id, or ``None`` when anything may have changed.
Listener = Callable[[str | None], None]


class Invalidations(Protocol):
    def subscribe(self, listener: Listener) -> None: ...

    async def publish(self, changed_id: str) -> None:
        """Tell the other replicas (never raises: a lost message is bounded by cache TTLs)."""
        ...


class LocalInvalidations:
    """One process: there is no one else to tell."""

    def subscribe(self, listener: Listener) -> None:
        return None

    async def publish(self, changed_id: str) -> None:
        return None


class RedisInvalidations:
    """Invalidations over Redis pub/sub (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, changed_id: str) -> None:
        try:
            await self._redis.publish(CHANNEL, changed_id.encode())
        except RedisError as exc:
            log.warning("invalidation of %s not published: %s", changed_id, exc)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="cache invalidations")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _tell(self, changed_id: str | None) -> None:
        for listener in self._listeners:
            listener(changed_id)

    async def _listen(self) -> None:
        lost = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if lost:
                    self._tell(None)
                    lost = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._tell(bytes(message["data"]).decode())
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
                raise
            except (RedisError, OSError) as exc:
                if not lost:
                    log.warning("cache invalidations: Redis subscription lost (%s)", exc)
                lost = True
                self._tell(None)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
                await asyncio.sleep(0.5)
