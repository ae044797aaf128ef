"""What replicas share, chosen by settings: in process (the embedded default), or Redis.

=====================  ===============================  ====================================
part                   without ``PARLEY_REDIS_URL``     with it
=====================  ===============================  ====================================
run event log          runs/log.py (memory)             runs/redis_log.py (Streams)
cancel / submit        this process only                runs/signals.py (pub/sub)
reply slots, locks     runs/admission.py                runs/redis_admission.py
daily quotas           runs/quotas.py                   runs/redis_quotas.py
cache invalidations    none needed                      storage/invalidation.py (pub/sub)
=====================  ===============================  ====================================

:class:`RedisWatch` pings Redis every second; while it does not answer, ChatService reports
NOT_SERVING on the health service (Envoy's health check takes the replica out of rotation for
chat) and new sends fail at once with UNAVAILABLE (REDIS_UNAVAILABLE); replies already running
go on, streaming from this replica's memory. redis-py reconnects by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.domain.models import Quota
from parley.runs.admission import Admission, InProcessAdmission
from parley.runs.log import InProcessRunEventLog, RunEventLog
from parley.runs.quotas import InProcessQuotaMeter, QuotaMeter, TotalsSince
from parley.runs.redis_admission import RedisAdmission
from parley.runs.redis_log import RedisRunEventLog
from parley.runs.redis_quotas import RedisQuotaMeter
from parley.runs.signals import LocalRunSignals, RedisRunSignals, RunSignals
from parley.storage.invalidation import Invalidations, LocalInvalidations, RedisInvalidations

__all__ = ["RedisWatch", "Shared", "SharedOptions", "build_shared"]

log = logging.getLogger(__name__)

#: Most entries kept per run stream (``MAXLEN ~``): above any reply's deltas, audio and tools.
MAX_EVENTS_PER_RUN = 200_000


@dataclass(frozen=True, slots=True)
class SharedOptions:
    """What :func:`build_shared` needs of the settings: ``redis_url`` (None: in process), the
    event log's ``retention_s`` and ``max_bytes`` (``PARLEY_RUN_EVENTS_*``), ``tool_wait_s``
    (``PARLEY_TOOL_WAIT_SECONDS``), ``lease_s`` (``PARLEY_RUN_LEASE_SECONDS``), ``timeout_s``
    (``PARLEY_REDIS_TIMEOUT_SECONDS``) and whether the database is SQLite."""

    redis_url: str | None
    retention_s: float
    max_bytes: int
    tool_wait_s: float
    lease_s: float
    timeout_s: float = 2.0
    sqlite: bool = False


@dataclass
class Shared:
    """The parts replicas share (see the module docstring). ``redis`` is None in process."""

    log: RunEventLog
    signals: RunSignals
    admission: Admission
    quotas: QuotaMeter
    invalidations: Invalidations
    redis: Redis | None = None
    watch: RedisWatch | None = None


class RedisWatch:
    """Pings Redis every ``interval_s`` and reports each change of reachability."""

    def __init__(
        self, redis: Redis, on_change: Callable[[bool], Awaitable[None]], *, interval_s: float = 1.0
    ) -> None:
        self._redis = redis
        self._on_change = on_change
        self._interval = interval_s
        self.up = True
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="redis watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self._redis.ping()
                up = True
            except (RedisError, OSError):
                up = False
            if up != self.up:
                self.up = up
                log.warning("Redis is %s", "reachable again" if up else "unreachable")
                await self._on_change(up)
            await asyncio.sleep(self._interval)


async def build_shared(
    options: SharedOptions,
    resources: AsyncExitStack,
    *,
    totals_since: TotalsSince,
    default_quota: Callable[[], Quota],
) -> Shared:
    """The shared parts ``options`` ask for; closed with ``resources``."""
    memory = InProcessRunEventLog(retention_s=options.retention_s, max_bytes=options.max_bytes)
    if options.redis_url is None:
        resources.push_async_callback(memory.close)
        return Shared(
            memory,
            LocalRunSignals(),
            InProcessAdmission(),
            InProcessQuotaMeter(totals_since, default_quota),
            LocalInvalidations(),
        )
    if options.sqlite:
        log.warning(
            "PARLEY_REDIS_URL is set but the database is SQLite, which one server process serves: "
            "run several replicas on PostgreSQL (PARLEY_DATABASE_URL)"
        )
    url, timeout = options.redis_url, options.timeout_s
    redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    resources.push_async_callback(redis.aclose)
    # Blocking reads (BLPOP of answers) wait longer than an ordinary call may.
    blocking = Redis.from_url(url, socket_timeout=timeout + 5.0, socket_connect_timeout=timeout)
    resources.push_async_callback(blocking.aclose)
    events = RedisRunEventLog(
        redis,
        memory,
        retention_s=options.retention_s,
        live_ttl_s=options.retention_s + options.tool_wait_s,
        max_events=MAX_EVENTS_PER_RUN,
    )
    resources.push_async_callback(events.close)
    signals = RedisRunSignals(blocking, answer_timeout_s=5.0)
    resources.push_async_callback(signals.close)
    admission = RedisAdmission(redis, lease_s=options.lease_s)
    await admission.start()
    resources.push_async_callback(admission.close)
    quotas = RedisQuotaMeter(redis, totals_since, default_quota)
    resources.push_async_callback(quotas.close)
    invalidations = RedisInvalidations(redis)
    await invalidations.start()
    resources.push_async_callback(invalidations.close)
    return Shared(events, signals, admission, quotas, invalidations, redis)
