"""MongoDB content store (production): message content as documents, through PyMongo's async API.

One collection, ``message_contents``, one document per message::

    {"_id": <message id>, "session_id": str, "text": str, "transcript_language": str,
     "audio_duration_s": float | None, "error_message": str, "tool_calls": [...],
     "citations": [...]}

(``tool_calls`` and ``citations`` as in ``MessageContent``; absent in documents written before
they existed, read as empty.)

``_id`` is the message id (UUIDv7, unique), so a put is one ``replace_one(upsert=True)`` and a
page of history is one ``find`` on ``_id $in [...]``; the ``session_id`` index serves deleting a
session. Every method is a single command: no multi-document transactions are needed (the tree,
which must change atomically, lives in SQL; see ``content/base.py``), so MongoDB-wire servers
without them (FerretDB v1.24, which the tests run) work.

The client is ``pymongo.AsyncMongoClient`` (Motor is end-of-life), created once per process and
closed by :meth:`MongoContentStore.close`. A server that cannot be reached within
``timeout_s`` (server selection, connect) raises ``Unavailable`` (``DATABASE_UNAVAILABLE``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReplaceOne
from pymongo.errors import ConnectionFailure, PyMongoError

from parley.domain.errors import ParleyError, Reason, Unavailable
from parley.storage.content.base import MessageContent

__all__ = ["COLLECTION", "MongoContentStore"]

#: The collection holding message content.
COLLECTION = "message_contents"

Document = dict[str, Any]


@asynccontextmanager
async def _errors() -> AsyncIterator[None]:
    """Map PyMongo failures: unreachable server → ``Unavailable``; anything else → ``ParleyError``."""
    try:
        yield
    except ConnectionFailure as exc:  # ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout ...
        raise Unavailable("message store unavailable", reason=Reason.DATABASE_UNAVAILABLE) from exc
    except PyMongoError as exc:
        raise ParleyError(f"message store failed: {type(exc).__name__}") from exc


class MongoContentStore:
    """``ContentStore`` on a MongoDB database.

    Args:
        url: a MongoDB connection string (``mongodb://host:port/``, ``mongodb+srv://...``).
        database: the database name (``PARLEY_MONGODB_DATABASE``).
        timeout_s: server selection and connect timeout, seconds (``PARLEY_MONGODB_TIMEOUT_SECONDS``).
        client_options: passed on to ``AsyncMongoClient`` (tests add ``event_listeners``).
    """

    def __init__(self, url: str, database: str, *, timeout_s: float = 5.0, **client_options: Any) -> None:
        timeout_ms = int(timeout_s * 1000)
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            appname="parley",
            **client_options,
        )
        self._collection = self._client[database][COLLECTION]

    async def start(self) -> None:
        """Create the ``session_id`` index (idempotent). Raises ``Unavailable`` if unreachable."""
        async with _errors():
            await self._collection.create_index([("session_id", ASCENDING)], name="session_id_1")

    async def close(self) -> None:
        """Close the client and its connection pool."""
        await self._client.close()

    async def put(self, session_id: str, message_id: str, content: MessageContent) -> None:
        async with _errors():
            await self._collection.replace_one(
                {"_id": message_id}, _document(session_id, content), upsert=True
            )

    async def put_many(self, session_id: str, contents: Mapping[str, MessageContent]) -> None:
        if not contents:
            return
        async with _errors():
            # One ``update`` command with one upserting statement per message (unordered).
            await self._collection.bulk_write(
                [
                    ReplaceOne({"_id": message_id}, _document(session_id, content), upsert=True)
                    for message_id, content in contents.items()
                ],
                ordered=False,
            )

    async def get_many(self, session_id: str, message_ids: Sequence[str]) -> Mapping[str, MessageContent]:
        if not message_ids:
            return {}
        async with _errors():
            # One round trip: the first batch holds every match (the default first batch is 101
            # documents; one more than asked lets the server close the cursor, so no getMore).
            cursor = self._collection.find({"session_id": session_id, "_id": {"$in": list(message_ids)}})
            docs = await cursor.batch_size(len(message_ids) + 1).to_list()
        return {
            doc["_id"]: MessageContent(
                text=doc["text"],
                transcript_language=doc.get("transcript_language", ""),
                audio_duration_s=doc.get("audio_duration_s"),
                error_message=doc.get("error_message", ""),
                tool_calls=tuple(doc.get("tool_calls") or ()),
                citations=tuple(doc.get("citations") or ()),
            )
            for doc in docs
        }

    async def delete(self, session_id: str, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        async with _errors():
            await self._collection.delete_many({"session_id": session_id, "_id": {"$in": list(message_ids)}})

    async def delete_session(self, session_id: str) -> None:
        async with _errors():
            await self._collection.delete_many({"session_id": session_id})


def _document(session_id: str, content: MessageContent) -> Document:
    return {
        "session_id": session_id,
        "text": content.text,
        "transcript_language": content.transcript_language,
        "audio_duration_s": content.audio_duration_s,
        "error_message": content.error_message,
        "tool_calls": [dict(call) for call in content.tool_calls],
        "citations": [dict(citation) for citation in content.citations],
    }
