"""What the MongoDB message store can rely on when the server is FerretDB v1.24 on SQLite.

These tests pin the behaviour of the test server (FerretDB v1.24.2, SQLite backend) as seen
through PyMongo's async API (``pymongo.AsyncMongoClient``; Motor is not used). Features that
work are asserted to work; features that FerretDB v1.24 lacks are asserted to fail the way they
actually fail, so a FerretDB upgrade that changes either shows up here.

Summary (see each test's docstring):

works:   insert_one / insert_many, find + sort + limit, compound and unique indexes (also
         compound unique), aggregate with $match/$sort/$limit, find_one_and_update as a
         compare-and-set *from one connection*, ``$in`` over 1,000 ids, delete_many.
missing: partial indexes (partialFilterExpression), $graphLookup and $lookup, multi-document
         transactions, atomic find_one_and_update / update_one / $inc across concurrent
         connections (they are read-then-write, so compare-and-set can have several winners
         and $inc can lose updates).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from tests.support.ferretdb import running_ferretdb

NOT_IMPLEMENTED = 238  # MongoDB's error code "NotImplemented", used by FerretDB for missing features
FAILED_TO_PARSE = 9

_db_names = itertools.count(1)

Doc = dict[str, object]


@pytest.fixture(scope="module")
def ferretdb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One FerretDB server (fresh SQLite directory) for this module."""
    with running_ferretdb(tmp_path_factory.mktemp("ferretdb")) as url:
        yield url


@pytest.fixture
async def client(ferretdb_url: str) -> AsyncIterator[AsyncMongoClient[Doc]]:
    """A client of its own for each test."""
    c: AsyncMongoClient[Doc] = AsyncMongoClient(ferretdb_url, serverSelectionTimeoutMS=10_000)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def db(client: AsyncMongoClient[Doc]) -> AsyncDatabase[Doc]:
    """A database no other test uses."""
    return client[f"cap{next(_db_names)}"]


async def test_server_identifies_as_ferretdb_with_its_aggregation_stages(
    client: AsyncMongoClient[Doc],
) -> None:
    """FerretDB v1.24 reports MongoDB 7.0.42 and lists the only aggregation stages it has.

    Neither $lookup nor $graphLookup is among them.
    """
    info = await client.admin.command("buildInfo")
    assert info["version"] == "7.0.42"
    stages = set(info["ferretdbFeatures"]["aggregationStages"])
    assert stages == {
        "$addFields",
        "$collStats",
        "$count",
        "$group",
        "$limit",
        "$match",
        "$project",
        "$set",
        "$skip",
        "$sort",
        "$unset",
        "$unwind",
    }


async def test_insert_one_and_insert_many(db: AsyncDatabase[Doc]) -> None:
    """insert_one and insert_many work, with client-chosen string ids."""
    one = await db.m.insert_one({"_id": "m0", "n": 0})
    assert one.inserted_id == "m0"
    many = await db.m.insert_many([{"_id": f"m{i}", "n": i} for i in range(1, 501)])
    assert len(many.inserted_ids) == 500
    assert await db.m.count_documents({}) == 501


async def test_find_with_sort_and_limit(db: AsyncDatabase[Doc]) -> None:
    """find with a filter, a compound sort and a limit returns the right page, in order."""
    await db.m.insert_many([{"_id": i, "s": i % 2, "n": i} for i in range(100)])
    page = await db.m.find({"s": 1, "n": {"$lt": 50}}).sort([("n", DESCENDING)]).limit(3).to_list()
    assert [d["_id"] for d in page] == [49, 47, 45]
    page = await db.m.find({}).sort([("s", ASCENDING), ("n", DESCENDING)]).limit(2).to_list()
    assert [d["_id"] for d in page] == [98, 96]


async def test_compound_and_unique_indexes(db: AsyncDatabase[Doc]) -> None:
    """Compound indexes, unique indexes and compound unique indexes are created and enforced."""
    assert await db.m.create_index([("session", ASCENDING), ("seq", DESCENDING)]) == "session_1_seq_-1"
    assert await db.m.create_index([("key", ASCENDING)], unique=True) == "key_1"
    assert await db.b.create_index([("session", ASCENDING), ("name", ASCENDING)], unique=True)

    await db.m.insert_one({"key": "k1"})
    with pytest.raises(DuplicateKeyError):
        await db.m.insert_one({"key": "k1"})

    await db.b.insert_one({"session": 1, "name": "main"})
    await db.b.insert_one({"session": 2, "name": "main"})
    with pytest.raises(DuplicateKeyError):
        await db.b.insert_one({"session": 1, "name": "main"})

    info = await db.m.index_information()
    assert info["session_1_seq_-1"]["key"] == [("session", 1), ("seq", -1)]
    assert info["key_1"]["unique"] is True


async def test_partial_unique_index_is_not_implemented(db: AsyncDatabase[Doc]) -> None:
    """FerretDB v1.24 lacks partial indexes: partialFilterExpression fails with NotImplemented."""
    with pytest.raises(OperationFailure) as exc:
        await db.b.create_index(
            [("session", ASCENDING), ("name", ASCENDING)],
            unique=True,
            partialFilterExpression={"kind": "branch"},
        )
    assert exc.value.code == NOT_IMPLEMENTED
    assert "partialFilterExpression" in str(exc.value)
    assert "session_1_name_1" not in await db.b.index_information()


async def test_unique_index_skips_documents_without_the_field(db: AsyncDatabase[Doc]) -> None:
    """A stand-in for a partial unique index: put the field only on documents that must be unique.

    FerretDB v1.24 drops the ``sparse`` option (index_information does not show it), but its unique
    indexes ignore documents that lack the field anyway (MongoDB itself does that only for sparse
    indexes, so the store should still pass ``sparse=True``). An explicit null is a value and
    is unique like any other.
    """
    await db.b.create_index([("branch_key", ASCENDING)], unique=True, sparse=True)
    assert "sparse" not in (await db.b.index_information())["branch_key_1"]

    await db.b.insert_many([{"kind": "message"}, {"kind": "message"}])  # no branch_key: no conflict
    await db.b.insert_one({"branch_key": "s1/main"})
    with pytest.raises(DuplicateKeyError):
        await db.b.insert_one({"branch_key": "s1/main"})
    await db.b.insert_one({"branch_key": None})
    with pytest.raises(DuplicateKeyError):
        await db.b.insert_one({"branch_key": None})


async def test_aggregate_match_sort_limit(db: AsyncDatabase[Doc]) -> None:
    """aggregate with $match, $sort and $limit works."""
    await db.m.insert_many([{"_id": i, "session": i % 3, "seq": i} for i in range(30)])
    cursor = await db.m.aggregate(
        [{"$match": {"session": 2}}, {"$sort": {"seq": -1}}, {"$limit": 4}],
    )
    assert [d["_id"] for d in await cursor.to_list()] == [29, 26, 23, 20]


async def test_graph_lookup_is_not_implemented(db: AsyncDatabase[Doc]) -> None:
    """FerretDB v1.24 lacks $graphLookup (walking a parent-pointer chain fails with NotImplemented).

    The chain must be walked by the store itself, e.g. with batched ``$in`` queries.
    """
    chain: list[Doc] = [{"_id": i, "parent": i - 1 if i else None} for i in range(10)]
    await db.m.insert_many(chain)
    with pytest.raises(OperationFailure) as exc:
        cursor = await db.m.aggregate(
            [
                {"$match": {"_id": 9}},
                {
                    "$graphLookup": {
                        "from": "m",
                        "startWith": "$parent",
                        "connectFromField": "parent",
                        "connectToField": "_id",
                        "as": "ancestors",
                        "depthField": "depth",
                    }
                },
            ]
        )
        await cursor.to_list()
    assert exc.value.code == NOT_IMPLEMENTED
    assert "$graphLookup" in str(exc.value)


async def test_lookup_is_not_implemented(db: AsyncDatabase[Doc]) -> None:
    """FerretDB v1.24 lacks $lookup too: no joins in aggregation."""
    await db.m.insert_one({"_id": 1, "branch": "b"})
    await db.b.insert_one({"_id": "b"})
    with pytest.raises(OperationFailure) as exc:
        cursor = await db.m.aggregate(
            [{"$lookup": {"from": "b", "localField": "branch", "foreignField": "_id", "as": "j"}}]
        )
        await cursor.to_list()
    assert exc.value.code == NOT_IMPLEMENTED


async def test_multi_document_transactions_are_not_supported(
    client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]
) -> None:
    """FerretDB v1.24 lacks transactions: the first write inside one is rejected, nothing is written.

    PyMongo sends ``startTransaction`` with the first command of the transaction; FerretDB
    answers FailedToParse (code 9, 'unknown field "startTransaction"'). Sessions without a
    transaction do work.
    """
    with pytest.raises(OperationFailure) as exc:
        async with client.start_session() as s, await s.start_transaction():
            await db.t.insert_one({"a": 1}, session=s)
            await db.t.insert_one({"a": 2}, session=s)
    assert exc.value.code == FAILED_TO_PARSE
    assert "startTransaction" in str(exc.value)
    assert await db.t.count_documents({}) == 0

    async with client.start_session() as s:
        await db.t.insert_one({"a": 3}, session=s)
        assert await db.t.count_documents({}, session=s) == 1


async def test_find_one_and_update_compare_and_set_on_one_connection(
    ferretdb_url: str, db: AsyncDatabase[Doc]
) -> None:
    """find_one_and_update with a filter on the old value works as compare-and-set when the
    operations reach FerretDB one at a time (here: one client with a single connection,
    which FerretDB serves in order)."""
    await db.h.insert_one({"_id": "branch", "head": "m1"})
    after = await db.h.find_one_and_update(
        {"_id": "branch", "head": "m1"}, {"$set": {"head": "m2"}}, return_document=ReturnDocument.AFTER
    )
    assert after == {"_id": "branch", "head": "m2"}
    stale = await db.h.find_one_and_update({"_id": "branch", "head": "m1"}, {"$set": {"head": "m3"}})
    assert stale is None
    assert await db.h.find_one({"_id": "branch"}) == {"_id": "branch", "head": "m2"}

    one_conn: AsyncMongoClient[Doc] = AsyncMongoClient(ferretdb_url, maxPoolSize=1)
    try:
        h = one_conn[db.name].h
        results = await asyncio.gather(
            *(
                h.find_one_and_update({"_id": "branch", "head": "m2"}, {"$set": {"head": f"x{i}"}})
                for i in range(20)
            )
        )
        assert sum(r is not None for r in results) == 1
    finally:
        await one_conn.close()


async def test_concurrent_compare_and_set_is_not_atomic(ferretdb_url: str) -> None:
    """FerretDB v1.24 (SQLite) lacks atomic read-modify-write across connections.

    findAndModify, update with a filter, and $inc are a read followed by a separate write (its
    SQLite backend avoids transactions by design), so concurrent compare-and-set from several
    connections can have several winners and concurrent $inc can lose increments. Each round
    races 20 operations over up to 20 connections; the race shows within a few rounds.
    """
    c: AsyncMongoClient[Doc] = AsyncMongoClient(ferretdb_url, maxPoolSize=20, minPoolSize=20)
    try:
        h = c["cas_race"].h
        # open the pool's connections before racing
        await asyncio.gather(*(h.find_one({"_id": "warm-up"}) for _ in range(40)))
        cas_winners: list[int] = []
        inc_results: list[int] = []
        for _ in range(30):
            await h.replace_one({"_id": "b"}, {"head": 0, "n": 0}, upsert=True)
            results = await asyncio.gather(
                *(h.find_one_and_update({"_id": "b", "head": 0}, {"$set": {"head": i}}) for i in range(1, 21))
            )
            cas_winners.append(sum(r is not None for r in results))
            await asyncio.gather(*(h.update_one({"_id": "b"}, {"$inc": {"n": 1}}) for _ in range(20)))
            doc = await h.find_one({"_id": "b"})
            assert doc is not None
            inc_results.append(int(doc["n"]))  # type: ignore[call-overload]
            if max(cas_winners) > 1 and min(inc_results) < 20:
                break
        assert min(cas_winners) >= 1
        assert max(cas_winners) > 1, f"compare-and-set had one winner in every round: {cas_winners}"
        assert min(inc_results) < 20, f"no $inc was lost: {inc_results}"
    finally:
        await c.close()


async def test_in_query_on_1000_ids(db: AsyncDatabase[Doc]) -> None:
    """``$in`` with 1,000 ids works, with sort and limit too."""
    await db.m.insert_many([{"_id": f"id{i:04d}", "n": i} for i in range(1500)])
    ids = [f"id{i:04d}" for i in range(0, 2000, 2)]  # 1,000 ids, 750 of them present
    assert len(ids) == 1000
    found = await db.m.find({"_id": {"$in": ids}}).to_list()
    assert len(found) == 750
    newest = await db.m.find({"_id": {"$in": ids}}).sort("n", DESCENDING).limit(3).to_list()
    assert [d["_id"] for d in newest] == ["id1498", "id1496", "id1494"]


async def test_delete_many(db: AsyncDatabase[Doc]) -> None:
    """delete_many removes exactly the matching documents."""
    await db.m.insert_many([{"_id": i, "session": i % 4} for i in range(40)])
    result = await db.m.delete_many({"session": {"$in": [1, 3]}})
    assert result.deleted_count == 20
    assert await db.m.count_documents({}) == 20
    assert await db.m.count_documents({"session": 1}) == 0
