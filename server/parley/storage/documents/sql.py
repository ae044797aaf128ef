"""SQL message store: the embedded default, in the same database as the metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import AlreadyExists
from parley.domain.models import Message, MessageStatus, Role, StopReason
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import messages

__all__ = ["SqlMessageStore"]


def _message(row: RowMapping) -> Message:
    return Message(
        id=row["id"],
        session_id=row["session_id"],
        parent_id=row["parent_id"],
        depth=row["depth"],
        role=Role(row["role"]),
        text=row["text"],
        status=MessageStatus(row["status"]),
        stop_reason=StopReason(row["stop_reason"]),
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        create_time=row["create_time"],
        transcript_language=row["transcript_language"],
        audio_duration_s=row["audio_duration_s"],
        request_id=row["request_id"] or "",
        time_to_first_token_s=row["time_to_first_token_s"],
        error_message=row["error_message"],
    )


def message_values(m: Message) -> dict[str, Any]:
    """Column values of a message (``request_id`` empty → NULL so the unique index ignores it)."""
    return {
        "id": m.id,
        "session_id": m.session_id,
        "parent_id": m.parent_id,
        "depth": m.depth,
        "role": m.role.value,
        "text": m.text,
        "status": m.status.value,
        "stop_reason": m.stop_reason.value,
        "model": m.model,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "transcript_language": m.transcript_language,
        "audio_duration_s": m.audio_duration_s,
        "request_id": m.request_id or None,
        "time_to_first_token_s": m.time_to_first_token_s,
        "error_message": m.error_message,
        "create_time": m.create_time,
    }


class SqlMessageStore:
    """``MessageStore`` on the ``messages`` table; branch paths via one recursive CTE."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self) -> None:
        """Nothing to prepare: the table and indexes come from the migrations."""

    async def close(self) -> None:
        """The engine is owned (and disposed) by the server."""

    async def insert(self, message: Message) -> None:
        try:
            async with self._db.transaction() as s:
                await s.execute(insert(messages).values(**message_values(message)))
        except IntegrityError:
            raise AlreadyExists(
                "a message with this request_id exists",
                reason="DUPLICATE_REQUEST_ID",
                metadata={"request_id": message.request_id},
            ) from None

    async def get(self, session_id: str, message_id: str) -> Message | None:
        async with self._db.transaction() as s:
            row = (
                (
                    await s.execute(
                        select(messages).where(
                            messages.c.id == message_id, messages.c.session_id == session_id
                        )
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _message(row)

    async def find_by_request_id(self, session_id: str, request_id: str) -> Message | None:
        async with self._db.transaction() as s:
            row = (
                (
                    await s.execute(
                        select(messages).where(
                            messages.c.session_id == session_id, messages.c.request_id == request_id
                        )
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _message(row)

    async def children(self, session_id: str, parent_id: str) -> Sequence[Message]:
        async with self._db.transaction() as s:
            rows = (
                (
                    await s.execute(
                        select(messages)
                        .where(
                            messages.c.session_id == session_id,
                            messages.c.parent_id == parent_id,
                        )
                        .order_by(messages.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [_message(r) for r in rows]

    async def path(self, session_id: str, head_id: str, min_depth: int, limit: int) -> Sequence[Message]:
        # Walk parent pointers from the head down to min_depth in the database: one round trip.
        walk = (
            select(messages.c.id, messages.c.parent_id, messages.c.depth)
            .where(messages.c.id == head_id, messages.c.session_id == session_id)
            .cte("walk", recursive=True)
        )
        parent = messages.alias("parent")
        walk = walk.union_all(
            select(parent.c.id, parent.c.parent_id, parent.c.depth)
            .join(walk, parent.c.id == walk.c.parent_id)
            .where(parent.c.depth >= min_depth)
        )
        q = (
            select(messages)
            .join(walk, messages.c.id == walk.c.id)
            .where(messages.c.depth >= min_depth)
            .order_by(messages.c.depth)
            .limit(limit)
        )
        async with self._db.transaction() as s:
            rows = (await s.execute(q)).mappings().all()
        return [_message(r) for r in rows]

    async def delete_session(self, session_id: str) -> None:
        async with self._db.transaction() as s:
            await s.execute(delete(messages).where(messages.c.session_id == session_id))
