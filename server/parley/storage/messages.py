"""Messages: the tree in SQL, the content in a ``ContentStore``, put together.

Every read of a page costs one SQL query plus one content-store call, whatever the depth.
Appending writes the content first, then inserts the tree row and moves the branch head in one
SQL transaction: a head never points at a missing message, and a reply is never stored without
its user message (its parent row exists, enforced by a foreign key).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import AlreadyExists
from parley.domain.models import Message, MessageStatus, Role, StopReason
from parley.storage.documents.base import ContentStore, MessageContent
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import branches, messages, sessions

__all__ = ["MessageRepository"]

log = logging.getLogger(__name__)


def _tree_values(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "session_id": m.session_id,
        "parent_id": m.parent_id,
        "depth": m.depth,
        "role": m.role.value,
        "status": m.status.value,
        "stop_reason": m.stop_reason.value,
        "model": m.model,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        # Empty → NULL so that the unique (session_id, request_id) index ignores it.
        "request_id": m.request_id or None,
        "time_to_first_token_s": m.time_to_first_token_s,
        "create_time": m.create_time,
    }


def _message(row: RowMapping, content: MessageContent | None) -> Message:
    c = content or MessageContent(text="", error_message="content missing")
    return Message(
        id=row["id"],
        session_id=row["session_id"],
        parent_id=row["parent_id"],
        depth=row["depth"],
        role=Role(row["role"]),
        text=c.text,
        status=MessageStatus(row["status"]),
        stop_reason=StopReason(row["stop_reason"]),
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        create_time=row["create_time"],
        transcript_language=c.transcript_language,
        audio_duration_s=c.audio_duration_s,
        request_id=row["request_id"] or "",
        time_to_first_token_s=row["time_to_first_token_s"],
        error_message=c.error_message,
    )


class MessageRepository:
    """Reads and writes whole messages (tree row + content)."""

    def __init__(self, db: Database, content: ContentStore) -> None:
        self._db = db
        self._content = content

    async def append(
        self, message: Message, branch_id: str, expected_head: str | None, *, must_move_head: bool = True
    ) -> bool:
        """Store ``message`` and make it the head of ``branch_id`` if the head is still ``expected_head``.

        Returns whether the head moved. With ``must_move_head`` a moved head stores nothing and
        returns False (the caller retries or aborts); without it the message is stored off-branch.
        Raises ``AlreadyExists`` (DUPLICATE_REQUEST_ID) for a request id already used in the session.
        """
        await self._content.put(message.session_id, message.id, _content(message))
        try:
            async with self._db.transaction() as s:
                await s.execute(insert(messages).values(**_tree_values(message)))
                cond = (
                    branches.c.head_message_id.is_(None)
                    if expected_head is None
                    else branches.c.head_message_id == expected_head
                )
                moved = await s.execute(
                    update(branches)
                    .where(branches.c.session_id == message.session_id, branches.c.id == branch_id, cond)
                    .values(
                        head_message_id=message.id, head_depth=message.depth, update_time=message.create_time
                    )
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    if must_move_head:
                        raise _HeadMoved
                    return False
                await s.execute(
                    update(sessions)
                    .where(sessions.c.id == message.session_id)
                    .values(update_time=message.create_time)
                )
                return True
        except _HeadMoved:
            await self._forget_content(message)
            return False
        except IntegrityError:
            await self._forget_content(message)
            raise AlreadyExists(
                "a message with this request_id exists",
                reason="DUPLICATE_REQUEST_ID",
                metadata={"request_id": message.request_id},
            ) from None

    async def _forget_content(self, message: Message) -> None:
        with contextlib.suppress(Exception):
            await self._content.delete(message.session_id, [message.id])

    async def _with_content(self, rows: Sequence[RowMapping]) -> list[Message]:
        if not rows:
            return []
        contents = await self._content.get_many(rows[0]["session_id"], [r["id"] for r in rows])
        missing = [r["id"] for r in rows if r["id"] not in contents]
        if missing:
            log.error("content missing for messages %s", missing)
        return [_message(r, contents.get(r["id"])) for r in rows]

    async def get(self, session_id: str, message_id: str) -> Message | None:
        row = await self._db.first(
            select(messages).where(messages.c.id == message_id, messages.c.session_id == session_id)
        )
        found = await self._with_content([row] if row else [])
        return found[0] if found else None

    async def find_by_request_id(self, session_id: str, request_id: str) -> Message | None:
        row = await self._db.first(
            select(messages).where(messages.c.session_id == session_id, messages.c.request_id == request_id)
        )
        found = await self._with_content([row] if row else [])
        return found[0] if found else None

    async def children(self, session_id: str, parent_id: str) -> Sequence[Message]:
        """Messages whose parent is ``parent_id``, oldest first."""
        rows = await self._db.all(
            select(messages)
            .where(messages.c.session_id == session_id, messages.c.parent_id == parent_id)
            .order_by(messages.c.id)
        )
        return await self._with_content(rows)

    async def path(self, session_id: str, head_id: str, min_depth: int, limit: int) -> Sequence[Message]:
        """Ancestors of ``head_id`` (inclusive) with ``depth >= min_depth``, oldest first, at most
        ``limit`` (the oldest ones). One recursive query walks parent pointers from the head down to
        ``min_depth`` inside the database, then one content-store call."""
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
        rows = await self._db.all(q)
        return await self._with_content(rows)

    async def delete_session_content(self, session_id: str) -> None:
        """Delete the content of a session whose rows are gone (the SQL delete cascades the tree)."""
        await self._content.delete_session(session_id)


class _HeadMoved(Exception):
    pass


def _content(m: Message) -> MessageContent:
    return MessageContent(m.text, m.transcript_language, m.audio_duration_s, m.error_message)
