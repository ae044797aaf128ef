"""Run-time settings an admin changed (table ``server_settings``): one JSON value per name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select

from parley.storage.sql.engine import Database
from parley.storage.sql.tables import server_settings

__all__ = ["ServerSettingsStore"]


class ServerSettingsStore:
    """Reads and writes ``server_settings`` rows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> tuple[dict[str, Any], datetime | None]:
        """Every stored value by name, and when the newest was written (None: none stored)."""
        rows = await self._db.all(select(server_settings))
        values = {r["name"]: json.loads(r["value"]) for r in rows}
        newest = max((r["update_time"] for r in rows), default=None)
        return values, newest

    async def put(self, values: Mapping[str, Any], now: datetime) -> None:
        """Store ``values`` (name → JSON-serializable value) in one transaction."""
        if not values:
            return
        async with self._db.transaction() as s:
            await s.execute(delete(server_settings).where(server_settings.c.name.in_(list(values))))
            await s.execute(
                insert(server_settings),
                [{"name": k, "value": json.dumps(v), "update_time": now} for k, v in values.items()],
            )
