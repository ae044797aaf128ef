"""SQL content store: the embedded default, in the same database as the metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from parley.storage.content.base import MessageContent
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import message_contents

__all__ = ["SqlContentStore"]

#: The columns an upsert replaces.
_CONTENT_COLUMNS = (
    "text",
    "transcript_language",
    "audio_duration_s",
    "error_message",
    "tool_calls",
    "citations",
)


class SqlContentStore:
    """``ContentStore`` on the ``message_contents`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Built once (see parley.storage.sql.hot): every reply writes content two or three times.
        dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
        upsert = dialect.insert(message_contents)
        self._upsert = upsert.on_conflict_do_update(
            index_elements=[message_contents.c.message_id],
            set_={name: upsert.excluded[name] for name in _CONTENT_COLUMNS},
        )

    async def start(self) -> None:
        """Nothing to prepare: the table comes from the migrations."""

    async def close(self) -> None:
        """The engine is owned (and disposed) by the server."""

    async def put(self, session_id: str, message_id: str, content: MessageContent) -> None:
        await self.put_many(session_id, {message_id: content})

    async def put_many(self, session_id: str, contents: Mapping[str, MessageContent]) -> None:
        """Insert or replace the content of each message: one upsert (``INSERT ... ON CONFLICT
        (message_id) DO UPDATE``, which SQLite and PostgreSQL both have)."""
        if not contents:
            return
        await self._db.execute(self._upsert, _rows(session_id, contents))

    @property
    def db(self) -> Database:
        """The database of the table (the metadata's, in every configuration that uses it)."""
        return self._db

    async def put_many_in(
        self, transaction: AsyncSession, session_id: str, contents: Mapping[str, MessageContent]
    ) -> None:
        """:meth:`put_many` as part of ``transaction`` (a session of :attr:`db`): the message
        store writes a message's content and its metadata in one transaction, with one commit."""
        if contents:
            await transaction.execute(self._upsert, _rows(session_id, contents))

    async def get_many(self, session_id: str, message_ids: Sequence[str]) -> Mapping[str, MessageContent]:
        if not message_ids:
            return {}
        rows = await self._db.all(
            select(message_contents).where(
                message_contents.c.session_id == session_id,
                message_contents.c.message_id.in_(list(message_ids)),
            )
        )
        return {
            r["message_id"]: MessageContent(
                r["text"],
                r["transcript_language"],
                r["audio_duration_s"],
                r["error_message"],
                tuple(json.loads(r["tool_calls"])) if r["tool_calls"] else (),
                tuple(json.loads(r["citations"])) if r["citations"] else (),
            )
            for r in rows
        }

    async def delete(self, session_id: str, message_ids: Sequence[str]) -> None:
        await self._db.execute(
            delete(message_contents).where(
                message_contents.c.session_id == session_id,
                message_contents.c.message_id.in_(list(message_ids)),
            )
        )

    async def delete_session(self, session_id: str) -> None:
        await self._db.execute(delete(message_contents).where(message_contents.c.session_id == session_id))


def _rows(session_id: str, contents: Mapping[str, MessageContent]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": message_id,
            "session_id": session_id,
            "text": content.text,
            "transcript_language": content.transcript_language,
            "audio_duration_s": content.audio_duration_s,
            "error_message": content.error_message,
            "tool_calls": json.dumps(list(content.tool_calls)) if content.tool_calls else None,
            "citations": json.dumps(list(content.citations)) if content.citations else None,
        }
        for message_id, content in contents.items()
    ]
