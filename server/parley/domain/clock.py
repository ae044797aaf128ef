"""Time source, injectable for tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, timezone-aware UTC, truncated to microseconds (what every database keeps)."""
    return datetime.now(UTC)
