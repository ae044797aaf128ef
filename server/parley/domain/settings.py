"""Run-time settings: what an admin can change without a restart (AdminService.UpdateSettings).

They start from the environment (``PARLEY_ALLOW_REGISTRATION``, ``PARLEY_QUOTA_*``); a value an
admin set is kept in the database and wins. Reads are served from a copy refreshed from the
database at most every ``ttl_s`` seconds (5 s), so a change made through another server process
applies everywhere within that time; a change made here applies here at once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from parley.domain.clock import Clock, utc_now
from parley.domain.models import Quota
from parley.storage.sql.server_settings import ServerSettingsStore

__all__ = ["SETTINGS_TTL_S", "RuntimeSettings", "ServerSettings"]

#: Longest time a change made by another process takes to apply here (s).
SETTINGS_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``allow_registration``: anyone may register; ``default_quota``: the limits of users whose
    own quota field is 0 (0 here: none); ``update_time``: when an admin last changed them."""

    allow_registration: bool
    default_quota: Quota
    update_time: datetime | None = None


class RuntimeSettings:
    """The current :class:`ServerSettings` (see the module docstring)."""

    def __init__(
        self,
        store: ServerSettingsStore,
        defaults: ServerSettings,
        *,
        ttl_s: float = SETTINGS_TTL_S,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._defaults = defaults
        self._ttl = ttl_s
        self._now = clock
        self._monotonic = monotonic
        self._current = defaults
        self._read_at = float("-inf")

    def current(self) -> ServerSettings:
        """The settings as last read (no I/O)."""
        return self._current

    async def fresh(self) -> ServerSettings:
        """The settings, reread from the database if the copy is older than ``ttl_s``."""
        if self._monotonic() - self._read_at >= self._ttl:
            values, newest = await self._store.load()
            self._current = _apply(self._defaults, values, newest)
            self._read_at = self._monotonic()
        return self._current

    async def update(self, changes: Mapping[str, Any]) -> ServerSettings:
        """Store ``changes`` (``allow_registration``: bool, ``default_quota``: a :class:`Quota`)
        and return the new settings."""
        values: dict[str, Any] = {}
        if "allow_registration" in changes:
            values["allow_registration"] = bool(changes["allow_registration"])
        if "default_quota" in changes:
            values["default_quota"] = dataclasses.asdict(changes["default_quota"])
        await self._store.put(values, self._now())
        self._read_at = float("-inf")
        return await self.fresh()


def _apply(defaults: ServerSettings, values: Mapping[str, Any], newest: datetime | None) -> ServerSettings:
    settings = replace(defaults, update_time=newest)
    if "allow_registration" in values:
        settings = replace(settings, allow_registration=bool(values["allow_registration"]))
    if "default_quota" in values:
        known = {f.name for f in dataclasses.fields(Quota)}
        stored = {k: int(v) for k, v in dict(values["default_quota"]).items() if k in known}
        settings = replace(settings, default_quota=replace(defaults.default_quota, **stored))
    return settings
