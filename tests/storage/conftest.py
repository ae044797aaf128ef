"""Storage fixtures: the suite's SQL database, migrated, and a content store of either kind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from parley.storage.content.base import ContentStore
from parley.storage.content.mongo import MongoContentStore
from parley.storage.content.sql import SqlContentStore
from parley.storage.migrate import upgrade_database
from parley.storage.sql.engine import Database

#: ``make_store(kind, db, **mongo_client_options)`` → a started content store.
MakeStore = Callable[..., Awaitable[ContentStore]]


@pytest.fixture(scope="module")
async def migrated_url(database_url: str) -> str:
    """The suite's database (SQLite file, or PostgreSQL), migrated to the newest revision."""
    await asyncio.to_thread(upgrade_database, database_url)
    return database_url


@pytest.fixture
async def db(migrated_url: str) -> AsyncIterator[Database]:
    database = Database(migrated_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Build content stores: ``"sql"`` on the given database, ``"mongo"`` on the suite's FerretDB."""
    made: list[ContentStore] = []

    async def make(kind: str, db: Database, **client_options: Any) -> ContentStore:
        store: ContentStore
        if kind == "sql":
            store = SqlContentStore(db)
        else:
            url = request.getfixturevalue("ferretdb_url")
            store = MongoContentStore(url, "parley_storage_tests", timeout_s=10, **client_options)
        made.append(store)
        await store.start()
        return store

    yield make
    for store in made:
        await store.close()
