"""Daily quotas shared by replicas: one Redis hash per user and UTC day.

``parley:quota:{user}:{YYYY-MM-DD}`` holds the day's ``in`` (prompt tokens), ``out`` (generated
tokens) and ``audio`` (seconds) and expires a day after it starts. Its first user that day
fills it from the usage records (``storage/sql/usage.py``; a replica that loses the race keeps
the hash it finds). One Lua script checks a send against all three limits and counts it, so
the limits hold exactly however many replicas admit at once.

Output tokens are **reserved**: a reply takes ``min(max_output_tokens, what is left)`` at
admission and streams within that block without asking Redis per token (a delta past the
block stops the reply, stop reason QUOTA_EXCEEDED); when the reply is stored the block is
replaced by the stored count. While replies run, their unused reservations count as spent, so
a user near the limit may be refused a send that the in-process meter would admit; the day
can never end over the limit by more than the hosted providers' chunking (runs/quotas.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.domain.clock import Clock, utc_now
from parley.domain.models import Message, Quota
from parley.runs.quotas import Reservation, TotalsSince, check_day, day_start
from parley.runs.redis_admission import redis_unavailable
from parley.storage.sql.usage import DayTotals

__all__ = ["RedisQuotaMeter"]

log = logging.getLogger(__name__)

#: A day's hash lives this long after it is filled (s): the day plus slack for clock skew.
DAY_TTL_S = 26 * 3600

#: KEYS[1] the day; ARGV in, out, audio. Fills the hash unless it exists; returns 1 if it filled.
_FILL = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'in', ARGV[1], 'out', ARGV[2], 'audio', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

#: KEYS[1] the day; ARGV: input tokens, audio s, max output tokens, limits in/out/audio (0: none).
#: Returns {1, block} when admitted, {0, in, out, audio} when not, {-1} when the day is not filled.
_ADMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local used_in = tonumber(redis.call('HGET', KEYS[1], 'in') or '0')
local used_out = tonumber(redis.call('HGET', KEYS[1], 'out') or '0')
local used_audio = tonumber(redis.call('HGET', KEYS[1], 'audio') or '0')
local input, audio, max_out = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lim_in, lim_out, lim_audio = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if (lim_in > 0 and used_in + input > lim_in) or (lim_out > 0 and used_out >= lim_out)
   or (lim_audio > 0 and used_audio + audio > lim_audio) then
  return {0, used_in, used_out, tostring(used_audio)}
end
local block = max_out
if lim_out > 0 then block = math.min(max_out, lim_out - used_out) end
redis.call('HINCRBY', KEYS[1], 'in', input)
redis.call('HINCRBY', KEYS[1], 'out', block)
redis.call('HINCRBYFLOAT', KEYS[1], 'audio', audio)
return {1, block}
"""


def day_key(user_id: str, now: datetime) -> str:
    return f"parley:quota:{user_id}:{now.date().isoformat()}"


class _RedisReservation:
    def __init__(self, meter: RedisQuotaMeter, key: str, block: int, limited: bool) -> None:
        self._meter = meter
        self.key = key
        self.block = block
        self._limited = limited
        self.taken = 0
        self._settled = False

    def take_output(self, tokens: int = 1) -> bool:
        if self._limited and self.taken + tokens > self.block:
            return False
        self.taken += tokens
        return True

    def settle(self, reply: Message | None) -> None:
        if self._settled:
            return
        self._settled = True
        if reply is not None:
            speech = reply.speech_duration_s or 0.0
            self._meter.add(self.key, output_tokens=reply.output_tokens - self.block, audio_seconds=speech)


class RedisQuotaMeter:
    """``QuotaMeter`` across replicas (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        totals_since: TotalsSince,
        defaults: Callable[[], Quota],
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._redis = redis
        self._totals_since = totals_since
        self._defaults = defaults
        self._now = clock
        self._fill = redis.register_script(_FILL)
        self._admit = redis.register_script(_ADMIT)
        self._pending: set[asyncio.Task[None]] = set()

    def limits(self, own: Quota) -> Quota:
        return own.over(self._defaults())

    async def admit(
        self,
        user_id: str,
        own: Quota,
        *,
        input_tokens: int,
        audio_seconds: float = 0.0,
        max_output_tokens: int = 0,
    ) -> Reservation:
        limit = self.limits(own)
        now = self._now()
        key = day_key(user_id, now)
        args = [
            input_tokens,
            audio_seconds,
            max_output_tokens,
            limit.input_tokens_per_day,
            limit.output_tokens_per_day,
            limit.audio_seconds_per_day,
        ]
        try:
            answer: Any = await self._admit(keys=[key], args=args)
            if int(answer[0]) == -1:
                totals = await self._totals_since(user_id, day_start(now))
                fill = [totals.input_tokens, totals.output_tokens, totals.audio_seconds, DAY_TTL_S]
                await self._fill(keys=[key], args=fill)
                answer = await self._admit(keys=[key], args=args)
        except RedisError as exc:
            raise redis_unavailable(exc) from exc
        if int(answer[0]) == 0:
            used = DayTotals(int(answer[1]), int(answer[2]), float(answer[3]))
            check_day(user_id, limit, used, input_tokens, audio_seconds, now)  # raises
        block = int(answer[1])
        return _RedisReservation(self, key, block, bool(limit.output_tokens_per_day))

    def refund(self, reservation: Reservation, *, input_tokens: int, audio_seconds: float = 0.0) -> None:
        assert isinstance(reservation, _RedisReservation)
        reservation.settle(None)
        self.add(
            reservation.key,
            input_tokens=-input_tokens,
            output_tokens=-reservation.block,
            audio_seconds=-audio_seconds,
        )

    def forget(self, user_id: str) -> None:
        self._spawn(self._redis.delete(day_key(user_id, self._now())))

    def add(
        self, key: str, *, input_tokens: int = 0, output_tokens: int = 0, audio_seconds: float = 0.0
    ) -> None:
        """Correct a day's counters (in the background; logged if Redis is down)."""

        async def write() -> None:
            pipe = self._redis.pipeline(transaction=True)
            if input_tokens:
                pipe.hincrby(key, "in", input_tokens)
            if output_tokens:
                pipe.hincrby(key, "out", output_tokens)
            if audio_seconds:
                pipe.hincrbyfloat(key, "audio", audio_seconds)
            await pipe.execute()

        self._spawn(write())

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        async def guarded() -> None:
            try:
                await coroutine
            except RedisError as exc:
                log.warning("quotas: a correction was not written to Redis: %s", exc)

        task = asyncio.ensure_future(guarded())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=2.0)
