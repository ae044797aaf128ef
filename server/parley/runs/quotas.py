"""Daily quotas: prompt tokens, generated tokens and audio seconds per user and UTC day.

A send is checked before anything is stored: its prompt must fit what is left of the day's input
tokens, its recording what is left of the audio seconds, and some output tokens must be left
(RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, with ``google.rpc.QuotaFailure`` and a
``google.rpc.RetryInfo`` delay until the next UTC midnight). While the reply streams, each text
delta takes its output tokens before it is sent (one, or the streamed chunks a hosted provider
merged into it when they arrived together, ``TextDeltaEvent.tokens``); a delta the limit has no
room for is not sent, not even in part, and the reply stops there (stop reason QUOTA_EXCEEDED,
stored INCOMPLETE). When the reply is stored, its count is corrected to the provider's (a local
model's count is one token per delta; a hosted model's deltas are chunks, so its day can end a
little over the limit), and its speech seconds are added.

``QuotaMeter`` is the interface. :class:`InProcessQuotaMeter`, the embedded default, reads the
day's totals once per user and day from the usage records (``storage/sql/usage.py``) and keeps
them in this process from then on, every admission and every delta counted under the user's
lock, so the limits hold exactly under concurrent sends of one process. Replicas share the
counters in Redis instead (runs/redis_quotas.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import QuotaViolation, Reason, ResourceExhausted
from parley.domain.models import Message, Quota
from parley.storage.sql.usage import DayTotals

__all__ = [
    "InProcessQuotaMeter",
    "QuotaMeter",
    "Reservation",
    "TotalsSince",
    "check_day",
    "day_start",
]

#: Reads the persisted totals of a user since an instant (the usage records).
TotalsSince = Callable[[str, datetime], Awaitable[DayTotals]]


def day_start(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class _Day:
    day: date
    totals: DayTotals
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Reservation(Protocol):
    """One reply's share of its user's day: output tokens taken as deltas arrive, settled when the
    reply is stored."""

    taken: int

    def take_output(self, tokens: int = 1) -> bool:
        """Count ``tokens`` about to be sent, if the day's output limit leaves room for them;
        False (nothing counted) when it does not: the reply must stop before this delta."""
        ...

    def settle(self, reply: Message | None) -> None:
        """The reply is stored: replace the counted deltas by its stored output tokens, and add
        its speech seconds. Idempotent."""
        ...


class QuotaMeter(Protocol):
    """Checks and counts daily quotas (see the module docstring)."""

    def limits(self, own: Quota) -> Quota:
        """The effective quota: the user's own fields, the server's default where they are 0."""
        ...

    async def admit(
        self,
        user_id: str,
        own: Quota,
        *,
        input_tokens: int,
        audio_seconds: float = 0.0,
        max_output_tokens: int = 0,
    ) -> Reservation:
        """Check a new reply against the day's limits and count its prompt and recording
        (``max_output_tokens``: the most the reply may generate, for meters that reserve).

        Raises ``ResourceExhausted`` (QUOTA_EXCEEDED) naming each limit it would break, with
        ``retry_after_s`` until the next UTC midnight.
        """
        ...

    def refund(self, reservation: Reservation, *, input_tokens: int, audio_seconds: float = 0.0) -> None:
        """Give back what :meth:`admit` counted for a reply that was never stored."""
        ...

    def forget(self, user_id: str) -> None:
        """Drop a user's counters (the user was deleted)."""
        ...


def check_day(
    user_id: str, limit: Quota, totals: DayTotals, input_tokens: int, audio_seconds: float, now: datetime
) -> None:
    """Raise ``ResourceExhausted`` (QUOTA_EXCEEDED) if a reply with this prompt and recording
    does not fit the day's ``totals`` under ``limit`` (or no output token is left)."""
    violations = []
    if limit.input_tokens_per_day and totals.input_tokens + input_tokens > limit.input_tokens_per_day:
        violations.append(
            QuotaViolation(
                f"users/{user_id}",
                f"input tokens per day: {totals.input_tokens} used + {input_tokens} for this "
                f"message > {limit.input_tokens_per_day}",
            )
        )
    if limit.output_tokens_per_day and totals.output_tokens >= limit.output_tokens_per_day:
        violations.append(
            QuotaViolation(
                f"users/{user_id}",
                f"output tokens per day: {totals.output_tokens} used of {limit.output_tokens_per_day}",
            )
        )
    if limit.audio_seconds_per_day and totals.audio_seconds + audio_seconds > limit.audio_seconds_per_day:
        violations.append(
            QuotaViolation(
                f"users/{user_id}",
                f"audio seconds per day: {math.ceil(totals.audio_seconds)} used + "
                f"{math.ceil(audio_seconds)} for this message > {limit.audio_seconds_per_day}",
            )
        )
    if violations:
        reset = day_start(now) + timedelta(days=1)
        raise ResourceExhausted(
            "daily quota exceeded: " + "; ".join(v.description for v in violations),
            reason=Reason.QUOTA_EXCEEDED,
            metadata={"reset_time": reset.isoformat()},
            quota_violations=violations,
            retry_after_s=(reset - now).total_seconds(),
        )


class _LocalReservation:
    """One reply's share of its user's day: output tokens taken as deltas arrive, settled when the
    reply is stored."""

    def __init__(self, day: _Day, limit: Quota) -> None:
        self._day = day
        self._limit = limit
        self.taken = 0
        self._settled = False

    def take_output(self, tokens: int = 1) -> bool:
        """Count ``tokens`` about to be sent, if the day's output limit leaves room for them;
        False (nothing counted) when it does not: the reply must stop before this delta."""
        limit = self._limit.output_tokens_per_day
        if limit and self._day.totals.output_tokens + tokens > limit:
            return False
        self._day.totals.output_tokens += tokens
        self.taken += tokens
        return True

    def settle(self, reply: Message | None) -> None:
        """The reply is stored: replace the counted deltas by its stored output tokens, and add
        its speech seconds. Idempotent."""
        if self._settled:
            return
        self._settled = True
        if reply is not None:
            self._day.totals.output_tokens += reply.output_tokens - self.taken
            self._day.totals.audio_seconds += reply.speech_duration_s or 0.0


class InProcessQuotaMeter:
    """``QuotaMeter`` in this process (see the module docstring).

    Args:
        totals_since: the persisted totals of a user since an instant (the usage records).
        defaults: the server's default quota, per field where a user's own is 0.
    """

    def __init__(
        self,
        totals_since: TotalsSince,
        defaults: Callable[[], Quota],
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._totals_since = totals_since
        self._defaults = defaults
        self._now = clock
        self._days: dict[str, _Day] = {}

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
        day = await self._day(user_id)
        async with day.lock:
            check_day(user_id, limit, day.totals, input_tokens, audio_seconds, self._now())
            day.totals.input_tokens += input_tokens
            day.totals.audio_seconds += audio_seconds
            return _LocalReservation(day, limit)

    def refund(self, reservation: Reservation, *, input_tokens: int, audio_seconds: float = 0.0) -> None:
        assert isinstance(reservation, _LocalReservation)
        reservation.settle(None)
        reservation._day.totals.input_tokens -= input_tokens
        reservation._day.totals.audio_seconds -= audio_seconds
        reservation._day.totals.output_tokens -= reservation.taken

    async def _day(self, user_id: str) -> _Day:
        today = self._now().date()
        day = self._days.get(user_id)
        if day is not None and day.day == today:
            return day
        if day is not None and day.day != today:
            self._days.pop(user_id, None)
        fresh = _Day(today, DayTotals())
        async with fresh.lock:
            current = self._days.setdefault(user_id, fresh)
            if current is fresh:
                try:
                    fresh.totals = await self._totals_since(user_id, day_start(self._now()))
                except BaseException:
                    self._days.pop(user_id, None)
                    raise
        if current is not fresh:
            async with current.lock:  # wait for whoever is reading the totals
                pass
        return current

    def forget(self, user_id: str) -> None:
        self._days.pop(user_id, None)
