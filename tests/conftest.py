"""Suite-wide fixtures: one real Parley server (a child process) on a real channel.

``PARLEY_TEST_DATABASE=postgres`` runs the whole suite against a throwaway PostgreSQL cluster
instead of the embedded SQLite file. ``PARLEY_TEST_MESSAGE_STORE=mongo`` keeps message content in
a MongoDB-wire server (FerretDB, see ``tests/support/ferretdb.py``) instead of SQL.

In those two configurations only the tests that touch the configured storage run: those that use
(directly or through other fixtures: ``server``, ``alice``, ``server_factory`` ...) the
``database_url``, ``mongodb_url`` or ``ferretdb_url`` fixtures, and the replica tests (which
start their own PostgreSQL). The others (audio, tokens, providers against scripted peers, a
server on its own SQLite file ...) would repeat unchanged: they run once, in the SQLite
configuration. ``PARLEY_TEST_EVERYWHERE=1`` keeps every test in every configuration.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import grpc
import pytest

from tests.support.client import UserClient, new_user
from tests.support.ferretdb import running_ferretdb
from tests.support.postgres import create_database, running_postgres
from tests.support.server import ServerProcess

#: Replies in tests are short: the behaviour under test does not depend on their length.
TEST_MAX_OUTPUT_TOKENS = "24"
#: The signing key of test servers, so tests can forge tokens (expired, wrong type ...).
TEST_JWT_SECRET = "test-secret-for-the-parley-suite-0123456789abcdef-0123456789abcdef"


#: Fixtures whose tests touch the configured storage (see the module docstring).
STORAGE_FIXTURES = frozenset({"database_url", "mongodb_url", "ferretdb_url"})
#: Tests that touch storage without those fixtures: the replicas start their own PostgreSQL.
STORAGE_PATHS = ("tests/replicas/",)


def _storage_configuration() -> bool:
    return (
        os.environ.get("PARLEY_TEST_DATABASE") == "postgres"
        or os.environ.get("PARLEY_TEST_MESSAGE_STORE") == "mongo"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the PostgreSQL and MongoDB configurations, deselect the tests that do not touch storage."""
    if not _storage_configuration() or os.environ.get("PARLEY_TEST_EVERYWHERE") == "1":
        return
    root = Path(str(config.rootpath))
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        path = Path(str(item.path)).relative_to(root).as_posix()
        uses = STORAGE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        (keep if uses or path.startswith(STORAGE_PATHS) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("PARLEY_TEST_DATABASE") == "postgres":
        with running_postgres() as url:
            yield url
    else:
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'parley.db'}"


@pytest.fixture(scope="session")
def fresh_database(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """``fresh_database()``: the URL of a new, empty database of the configured kind (a SQLite
    file, or a new database on the suite's PostgreSQL cluster), for tests that need to be alone
    in it (the first user of an empty database is its admin)."""

    def make() -> str:
        if database_url.startswith("postgresql"):
            return create_database(database_url, f"fresh_{uuid.uuid4().hex[:12]}")
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fresh') / 'parley.db'}"

    return make


@pytest.fixture(scope="session")
def ferretdb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One FerretDB (MongoDB wire protocol) for the whole run, started on first use."""
    with running_ferretdb(tmp_path_factory.mktemp("ferretdb")) as url:
        yield url


@pytest.fixture(scope="session")
def mongodb_url(request: pytest.FixtureRequest) -> str | None:
    """The MongoDB URL test servers store message content in, or None for the SQL content store."""
    store = os.environ.get("PARLEY_TEST_MESSAGE_STORE", "sql")
    if store not in ("sql", "mongo"):
        raise pytest.UsageError(f"PARLEY_TEST_MESSAGE_STORE must be sql or mongo, not {store!r}")
    return str(request.getfixturevalue("ferretdb_url")) if store == "mongo" else None


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, mongodb_url: str | None
) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers (same database unless given); all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(
        data_dir: Path | None = None,
        database: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **settings: str,
    ) -> ServerProcess:
        settings.setdefault("default_max_output_tokens", TEST_MAX_OUTPUT_TOKENS)
        settings.setdefault("local_seed", "42")
        settings.setdefault("jwt_secret", TEST_JWT_SECRET)
        if mongodb_url is not None:
            settings.setdefault("mongodb_url", mongodb_url)
        proc = ServerProcess(
            data_dir or tmp_path_factory.mktemp("server"),
            database or database_url,
            environ=environ,
            **settings,
        )
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture
def alice(channel: grpc.Channel) -> UserClient:
    return new_user(channel, prefix="alice")


@pytest.fixture
def bob(channel: grpc.Channel) -> UserClient:
    return new_user(channel, prefix="bob")


@pytest.fixture(scope="session")
def server_target(server: ServerProcess) -> str:
    return server.target
