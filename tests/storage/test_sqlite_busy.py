"""A SQLite write that cannot get the write lock in time is UNAVAILABLE (retryable), not INTERNAL,
and leaves the stored data as it was. Storage-level: another connection holds the lock for real."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from parley.domain.errors import Unavailable
from parley.domain.models import User
from parley.storage.migrate import upgrade_database
from parley.storage.sql import engine
from parley.storage.sql.engine import Database
from parley.storage.sql.users import UserStore


async def test_locked_database_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "busy.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade_database, url)
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    db = Database(url)
    store = UserStore(db)
    now = datetime.now(UTC)
    await store.create_user(User("01900000-0000-7000-8000-000000000001", "first", "first", now, now), "hash")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # take the write lock and keep it
        with pytest.raises(Unavailable) as caught:
            await store.create_user(
                User("01900000-0000-7000-8000-000000000002", "second", "s", now, now), "hash"
            )
        assert caught.value.reason == "DATABASE_BUSY"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await store.get_credentials("first") is not None
    assert await store.get_credentials("second") is None
    await db.dispose()
