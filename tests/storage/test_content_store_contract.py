"""One contract for every ``ContentStore``: the SQL store and the MongoDB store behave the same.

The SQL store runs on the suite's database (a temporary SQLite file, or PostgreSQL with
``PARLEY_TEST_DATABASE=postgres``), migrated with Alembic; the MongoDB store runs on a real
MongoDB-wire server (FerretDB v1.24, ``tests/support/ferretdb.py``).
"""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Awaitable, Callable

import pytest
from parley.domain.errors import Unavailable
from parley.storage.content.base import ContentStore, MessageContent
from parley.storage.content.mongo import MongoContentStore
from parley.storage.content.sql import SqlContentStore
from parley.storage.sql.engine import Database

from tests.support.net import free_port

#: The ``make_store`` fixture (tests/storage/conftest.py): ``await make_store("sql" | "mongo", db)``.
MakeStore = Callable[..., Awaitable[ContentStore]]

ARABIC = "مرحبا! كيف حالك اليوم؟ 🌙"


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(params=["sql", "mongo"])
async def store(request: pytest.FixtureRequest, db: Database, make_store: MakeStore) -> ContentStore:
    return await make_store(request.param, db)


CALLS = (
    {
        "id": "call_1",
        "name": "weather",
        "arguments": '{"city": "أبوظبي"}',
        "kind": "http",
        "require_approval": True,
    },
    {
        "id": "call_2",
        "name": "get_time",
        "arguments": "not json",
        "kind": "client",
        "require_approval": False,
    },
)

#: ``MessageContent.citations`` as ``storage/message_rows.py`` writes them (non-ASCII text,
#: an empty source list, metadata of the source).
CITATIONS = (
    {
        "text": "مرحبا",
        "start_index": 0,
        "end_index": 4,
        "sources": [
            {
                "text": "Retrieved: " + ARABIC,
                "location": "s3://kb/greetings.txt",
                "location_type": "S3",
                "metadata": {"page": "3", "x-amz-bedrock-kb-source-uri": "s3://kb/greetings.txt"},
            },
            {
                "text": "A web page.",
                "location": "https://example.org/",
                "location_type": "WEB",
                "metadata": {},
            },
        ],
    },
    {"text": "حالك", "start_index": 10, "end_index": 13, "sources": []},
)

CONTENTS = [
    MessageContent("Hello there."),
    MessageContent(ARABIC, transcript_language="ar", audio_duration_s=2.5),
    MessageContent("", error_message="provider failed"),
    MessageContent("x" * 100_000),
    MessageContent("Let me check.", tool_calls=CALLS),
    MessageContent(ARABIC, citations=CITATIONS),
]


async def test_put_then_get_many_round_trips(store: ContentStore) -> None:
    session = _id()
    ids = [_id() for _ in CONTENTS]
    for message_id, content in zip(ids, CONTENTS, strict=True):
        await store.put(session, message_id, content)
    got = await store.get_many(session, ids)
    assert dict(got) == dict(zip(ids, CONTENTS, strict=True))
    assert got[ids[1]].text == ARABIC  # UTF-8 intact, emoji included


async def test_citations_round_trip_and_are_overwritten(store: ContentStore) -> None:
    """Citations survive both kinds of put, and a put without them clears them."""
    session, one, two = _id(), _id(), _id()
    await store.put_many(
        session, {one: MessageContent("cited", citations=CITATIONS), two: MessageContent("x")}
    )
    got = await store.get_many(session, [one, two])
    assert got[one].citations == CITATIONS and got[two].citations == ()
    await store.put(session, one, MessageContent("regenerated"))
    assert (await store.get_many(session, [one]))[one].citations == ()


async def test_put_overwrites(store: ContentStore) -> None:
    session, message_id = _id(), _id()
    await store.put(session, message_id, MessageContent("first"))
    await store.put(session, message_id, MessageContent("second", error_message="cut short"))
    assert await store.get_many(session, [message_id]) == {
        message_id: MessageContent("second", error_message="cut short")
    }


async def test_get_many_leaves_out_absent_ids_and_other_sessions(store: ContentStore) -> None:
    mine, theirs = _id(), _id()
    a, b = _id(), _id()
    await store.put(mine, a, MessageContent("mine"))
    await store.put(theirs, b, MessageContent("theirs"))
    assert await store.get_many(mine, [a, b, _id()]) == {a: MessageContent("mine")}
    assert await store.get_many(theirs, [a]) == {}
    assert await store.get_many(mine, []) == {}


async def test_get_many_reads_a_thousand_ids(store: ContentStore) -> None:
    session = _id()
    ids = [_id() for _ in range(1000)]
    for i, message_id in enumerate(ids):
        await store.put(session, message_id, MessageContent(f"message {i}"))
    got = await store.get_many(session, ids)
    assert len(got) == 1000
    assert got[ids[999]] == MessageContent("message 999")


async def test_delete_removes_only_the_given_ids_of_the_session(store: ContentStore) -> None:
    session, other = _id(), _id()
    a, b, c = _id(), _id(), _id()
    await store.put(session, a, MessageContent("a"))
    await store.put(session, b, MessageContent("b"))
    await store.put(other, c, MessageContent("c"))
    await store.delete(session, [a, c])  # c belongs to another session: left alone
    assert await store.get_many(session, [a, b]) == {b: MessageContent("b")}
    assert await store.get_many(other, [c]) == {c: MessageContent("c")}
    await store.delete(session, [])  # a no-op


async def test_delete_session_removes_only_that_session(store: ContentStore) -> None:
    session, other = _id(), _id()
    ids = [_id() for _ in range(5)]
    for message_id in ids:
        await store.put(session, message_id, MessageContent("bye"))
    kept = _id()
    await store.put(other, kept, MessageContent("stays"))
    await store.delete_session(session)
    assert await store.get_many(session, ids) == {}
    assert await store.get_many(other, [kept]) == {kept: MessageContent("stays")}


async def test_start_is_idempotent(store: ContentStore) -> None:
    await store.start()
    session, message_id = _id(), _id()
    await store.put(session, message_id, MessageContent("after a second start"))
    assert await store.get_many(session, [message_id]) == {message_id: MessageContent("after a second start")}


def _unreachable_sql() -> tuple[ContentStore, Callable[[], Awaitable[None]]]:
    db = Database(f"postgresql+asyncpg://parley@127.0.0.1:{free_port()}/parley")
    return SqlContentStore(db), db.dispose


def _unreachable_mongo() -> tuple[ContentStore, Callable[[], Awaitable[None]]]:
    store = MongoContentStore(f"mongodb://127.0.0.1:{free_port()}/", "parley", timeout_s=0.5)
    return store, store.close


async def _expect_unavailable(make: Callable[[], tuple[ContentStore, Callable[[], Awaitable[None]]]]) -> None:
    store, close = make()
    try:
        calls = [
            lambda: store.put(_id(), _id(), MessageContent("lost?")),
            lambda: store.get_many(_id(), [_id()]),
            lambda: store.delete(_id(), [_id()]),
            lambda: store.delete_session(_id()),
        ]
        if isinstance(store, MongoContentStore):  # the SQL store has nothing to prepare
            calls.append(store.start)
        for call in calls:
            with pytest.raises(Unavailable) as caught:
                await call()
            assert caught.value.reason == "DATABASE_UNAVAILABLE"
    finally:
        await close()


@pytest.mark.parametrize("make", [_unreachable_sql, _unreachable_mongo], ids=["sql", "mongo"])
async def test_unreachable_database_is_unavailable(
    make: Callable[[], tuple[ContentStore, Callable[[], Awaitable[None]]]],
) -> None:
    """A port with nothing listening: every call raises ``Unavailable`` (DATABASE_UNAVAILABLE)."""
    await _expect_unavailable(make)
    # PyMongo 4.20 keeps the socket of a refused monitor connection alive in the traceback of the
    # error it remembers for the server, until the client is garbage; collect it here, quietly,
    # rather than let its ResourceWarning land on a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
