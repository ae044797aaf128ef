"""Fast in-process tests of the domain: a scripted provider and a SQLite file per test.

The schema comes from the real Alembic migrations, applied once to a template file that every
test copies (a copy takes milliseconds, a migration about a second).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from parley.storage.migrate import upgrade_database

from tests.support.scripted import Domain

MakeDomain = Callable[..., Awaitable[Domain]]


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "parley.db"
    upgrade_database(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
async def make_domain(template_db: Path, tmp_path: Path) -> AsyncIterator[MakeDomain]:
    """``await make_domain(**options)``: a started :class:`Domain` on a fresh copy of the schema.
    Several domains made in one test share the database, like replicas of one deployment."""
    made: list[Domain] = []
    path = tmp_path / "parley.db"
    await asyncio.to_thread(shutil.copyfile, template_db, path)

    async def make(**options: Any) -> Domain:
        domain = await Domain(f"sqlite+aiosqlite:///{path}", **options).start()
        made.append(domain)
        return domain

    yield make
    for domain in made:
        await domain.close()


@pytest.fixture
async def domain(make_domain: MakeDomain) -> Domain:
    return await make_domain()
