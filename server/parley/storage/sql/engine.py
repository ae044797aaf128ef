"""One async engine per process, with the session factory the stores share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, event
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from parley.domain.errors import Reason, Unavailable

__all__ = ["SQLITE_BUSY_TIMEOUT_S", "Database"]

#: How long a SQLite writer waits for the write lock (s). SQLite has one writer at a time; the
#: benchmark (bench/) saw 5 s run out with 50 streams finishing at once, so wait longer, and
#: past it answer UNAVAILABLE (retryable) rather than INTERNAL.
SQLITE_BUSY_TIMEOUT_S = 30.0


class Database:
    """Owns the SQLAlchemy ``AsyncEngine`` and ``async_sessionmaker(expire_on_commit=False)``.

    ``url`` is an async SQLAlchemy URL: ``sqlite+aiosqlite:///path`` (the parent directory is
    created) or ``postgresql+asyncpg://user:pass@host/db``. SQLite connections get
    ``foreign_keys=ON`` (cascading deletes), WAL journaling and a ``SQLITE_BUSY_TIMEOUT_S`` busy timeout.
    Statement parameters (message text, password and token hashes) are never shown in SQL errors
    or SQL logging (``hide_parameters``), so a logged database error cannot leak them.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One session in one transaction: commits on success, rolls back on error.

        Raises ``Unavailable`` (reason ``DATABASE_UNAVAILABLE``) when the database cannot be
        reached (asyncpg raises a plain ``OSError``, such as ``ConnectionRefusedError``, when
        it cannot connect; SQLAlchemy does not wrap those).
        """
        with _mapped_errors():
            async with self.sessionmaker() as session, session.begin():
                yield session

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """One Core connection in one transaction (commits on success): what the one-statement
        helpers below use; lighter than an ORM session (a read on SQLite: 0.93 → 0.66 ms here).
        Errors as :meth:`transaction`."""
        with _mapped_errors():
            async with self.engine.begin() as connection:
                yield connection

    async def first(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> RowMapping | None:
        """Run ``statement`` (with bound ``params``) in its own transaction; its first row as a
        mapping, or None."""
        async with self._connection() as c:
            return (await c.execute(statement, params)).mappings().first()

    async def all(self, statement: Executable) -> Sequence[RowMapping]:
        """Run ``statement`` in its own transaction; all its rows as mappings."""
        async with self._connection() as c:
            return (await c.execute(statement)).mappings().all()

    async def execute(self, statement: Executable, rows: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Run a write ``statement`` in its own transaction (once per parameter set of ``rows``,
        when given: an executemany); the number of rows it matched."""
        async with self._connection() as c:
            result = await c.execute(statement) if rows is None else await c.execute(statement, list(rows))
        return int(getattr(result, "rowcount", 0) or 0)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Database errors a caller can act on, as ``Unavailable`` (see :meth:`Database.transaction`)."""
    try:
        yield
    except OSError as exc:
        raise Unavailable("database unavailable", reason=Reason.DATABASE_UNAVAILABLE) from exc
    except (OperationalError, DBAPIError) as exc:
        if exc.connection_invalidated or (isinstance(exc, OperationalError) and _is_connect_error(exc)):
            raise Unavailable("database unavailable", reason=Reason.DATABASE_UNAVAILABLE) from exc
        if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
            raise Unavailable("database busy; retry", reason=Reason.DATABASE_BUSY) from exc
        raise


def _is_connect_error(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(
        s in text
        for s in (
            "connection refused",
            "could not connect",
            "connection was closed",
            "unable to open database",
        )
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()
