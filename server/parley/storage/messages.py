"""Messages: the tree in SQL, the content in a ``ContentStore``, put together.

Every read of a page costs one SQL query plus one content-store call, whatever the depth.
Writing stores the content first, then inserts the tree rows and moves the branch head in one
SQL transaction: a head never points at a missing message, and a reply is never stored without
its user message (its parent row exists, enforced by a foreign key). A crash between the two
leaves an unreachable content document at worst.

A reply is written three times: when its run starts (status IN_PROGRESS, empty text, together
with its user message and its ``runs`` row), at checkpoints while it is generated (text and
output tokens so far), and when the run ends (final status, usage, stop reason).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import AlreadyExists, Reason
from parley.domain.models import Branch, Message, MessageStatus, Role, StopReason
from parley.storage.content.base import ContentStore, MessageContent
from parley.storage.sql.engine import Database
from parley.storage.sql.sessions import branch_values
from parley.storage.sql.tables import branches, messages, runs, sessions, usage_records
from parley.storage.sql.usage import UsageRecord

__all__ = ["MessageStore", "RunRecord"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The ``runs`` row of a reply: who started it, on which branch, which process runs it."""

    id: str  # the assistant message id
    session_id: str
    branch_id: str
    user_id: str
    replica_id: str | None
    background: bool
    last_sequence_number: int
    create_time: datetime


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
        "speech_duration_s": m.speech_duration_s,
    }


def _outcome_values(m: Message) -> dict[str, Any]:
    return {
        "status": m.status.value,
        "stop_reason": m.stop_reason.value,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "time_to_first_token_s": m.time_to_first_token_s,
        "speech_duration_s": m.speech_duration_s,
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
        speech_duration_s=row["speech_duration_s"],
    )


def _content(m: Message) -> MessageContent:
    return MessageContent(m.text, m.transcript_language, m.audio_duration_s, m.error_message)


def _run(row: RowMapping) -> RunRecord:
    return RunRecord(
        id=row["id"],
        session_id=row["session_id"],
        branch_id=row["branch_id"],
        user_id=row["user_id"],
        replica_id=row["replica_id"],
        background=row["background"],
        last_sequence_number=row["last_sequence_number"],
        create_time=row["create_time"],
    )


class MessageStore:
    """Reads and writes whole messages (tree row + content) and the runs that write replies."""

    def __init__(self, db: Database, content: ContentStore) -> None:
        self._db = db
        self._content = content

    # --- writes --------------------------------------------------------------------------------

    async def append(self, message: Message, branch_id: str, expected_head: str | None) -> bool:
        """Store a whole ``message`` and make it the head of ``branch_id`` if the head is still
        ``expected_head``; False (nothing stored) if it moved. Raises ``AlreadyExists``
        (DUPLICATE_REQUEST_ID) for a request id already used in the session."""
        return await self._insert([message], branch_id, expected_head)

    async def start_reply(
        self,
        reply: Message,
        run: RunRecord,
        *,
        user: Message | None = None,
        expected_head: str | None = None,
        new_branch: Branch | None = None,
        usage: UsageRecord | None = None,
    ) -> bool:
        """Store an IN_PROGRESS ``reply``, its run and its ``usage`` record, and make it the head of
        ``run.branch_id``.

        A send passes its ``user`` message (stored first, as the reply's parent) and the head it
        read (``expected_head``): if the head moved since, nothing is stored and the result is
        False. A regenerate passes ``new_branch`` instead, created (and made active) in the same
        transaction. Raises ``AlreadyExists`` (DUPLICATE_REQUEST_ID) for a request id already
        used in the session.
        """
        written = [m for m in (user, reply) if m is not None]
        if new_branch is not None:
            expected_head = new_branch.head_id
        return await self._insert(
            written, run.branch_id, expected_head, run=run, new_branch=new_branch, usage=usage
        )

    async def _insert(
        self,
        written: list[Message],
        branch_id: str,
        expected_head: str | None,
        *,
        run: RunRecord | None = None,
        new_branch: Branch | None = None,
        usage: UsageRecord | None = None,
    ) -> bool:
        """Content first, then one transaction: tree rows, the head move (compare-and-set),
        the run and usage rows, the session's update time."""
        head = written[-1]
        session_id = head.session_id
        await self._content.put_many(session_id, {m.id: _content(m) for m in written})
        try:
            async with self._db.transaction() as s:
                if new_branch is not None:
                    await s.execute(insert(branches).values(**branch_values(new_branch)))
                    await s.execute(
                        update(sessions)
                        .where(sessions.c.id == session_id)
                        .values(active_branch_id=new_branch.id, update_time=head.create_time)
                    )
                for m in written:
                    await s.execute(insert(messages).values(**_tree_values(m)))
                head_is = (
                    branches.c.head_id.is_(None)
                    if expected_head is None
                    else branches.c.head_id == expected_head
                )
                moved = await s.execute(
                    update(branches)
                    .where(branches.c.session_id == session_id, branches.c.id == branch_id, head_is)
                    .values(head_id=head.id, message_count=head.depth + 1, update_time=head.create_time)
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    raise _HeadMoved
                if run is not None:
                    await s.execute(insert(runs).values(**_run_values(run)))
                if usage is not None:
                    await s.execute(insert(usage_records).values(**usage.values()))
                await s.execute(
                    update(sessions).where(sessions.c.id == session_id).values(update_time=head.create_time)
                )
                return True
        except _HeadMoved:
            await self._forget_content(session_id, [m.id for m in written])
            return False
        except IntegrityError:
            await self._forget_content(session_id, [m.id for m in written])
            request_id = next((m.request_id for m in written if m.request_id), "")
            raise AlreadyExists(
                "a message with this request_id exists",
                reason=Reason.DUPLICATE_REQUEST_ID,
                metadata={"request_id": request_id},
            ) from None

    async def checkpoint(self, reply: Message) -> None:
        """Store the text and output tokens of a reply that is still being generated."""
        await self._content.put(reply.session_id, reply.id, _content(reply))
        await self._db.execute(
            update(messages)
            .where(messages.c.id == reply.id, messages.c.status == MessageStatus.IN_PROGRESS.value)
            .values(output_tokens=reply.output_tokens, time_to_first_token_s=reply.time_to_first_token_s)
        )

    async def finish_reply(self, reply: Message, last_sequence_number: int, finish_time: datetime) -> bool:
        """Store the final state of ``reply``, of its usage record, and mark its run finished.
        False if the reply was already finished (by a sweep) or is gone (its session or branch
        was deleted)."""
        await self._content.put(reply.session_id, reply.id, _content(reply))
        async with self._db.transaction() as s:
            done = await s.execute(
                update(messages)
                .where(messages.c.id == reply.id, messages.c.status == MessageStatus.IN_PROGRESS.value)
                .values(**_outcome_values(reply))
            )
            if done.rowcount:  # type: ignore[attr-defined]
                await s.execute(
                    update(usage_records)
                    .where(usage_records.c.message_id == reply.id)
                    .values(
                        input_tokens=reply.input_tokens,
                        output_tokens=reply.output_tokens,
                        audio_output_s=reply.speech_duration_s or 0.0,
                        status=reply.status.value,
                    )
                )
            await s.execute(
                update(runs)
                .where(runs.c.id == reply.id)
                .values(replica_id=None, last_sequence_number=last_sequence_number, finish_time=finish_time)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def _forget_content(self, session_id: str, message_ids: list[str]) -> None:
        with contextlib.suppress(Exception):
            await self._content.delete(session_id, message_ids)

    # --- reads ---------------------------------------------------------------------------------

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

    async def get_run(self, session_id: str, message_id: str) -> RunRecord | None:
        """The run that wrote (or writes) the assistant message ``message_id``."""
        row = await self._db.first(
            select(runs).where(runs.c.id == message_id, runs.c.session_id == session_id)
        )
        return None if row is None else _run(row)

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
        rows = await self._db.all(_path_query(session_id, head_id, min_depth).limit(limit))
        return await self._with_content(rows)

    async def path_rows(self, session_id: str, head_id: str) -> Sequence[RowMapping]:
        """The tree rows (no content) of the whole path to ``head_id``, oldest first: one query."""
        return await self._db.all(_path_query(session_id, head_id, 0))

    async def delete_unreachable(self, session_id: str, head_id: str) -> list[str]:
        """Delete the messages on the path to ``head_id`` that no branch of the session reaches
        any more (call it after deleting a branch whose head it was), tree rows in one
        transaction, then their content. Returns their ids."""
        heads = select(branches.c.head_id.label("id")).where(
            branches.c.session_id == session_id, branches.c.head_id.is_not(None)
        )
        reach = (
            select(messages.c.id, messages.c.parent_id)
            .where(messages.c.id.in_(heads))
            .cte("reach", recursive=True)
        )
        up = messages.alias("up")
        reach = reach.union(select(up.c.id, up.c.parent_id).join(reach, up.c.id == reach.c.parent_id))
        gone = [
            r["id"]
            for r in await self._db.all(
                _path_query(session_id, head_id, 0).where(messages.c.id.not_in(select(reach.c.id)))
            )
        ]
        if gone:
            # Deleting the oldest cascades to the rest (parent_id ON DELETE CASCADE).
            await self._db.execute(delete(messages).where(messages.c.id == gone[0]))
            await self._forget_content(session_id, gone)
        return gone

    async def delete_session_content(self, session_id: str) -> None:
        """Delete the content of a session whose rows are gone (the SQL delete cascades the tree)."""
        await self._content.delete_session(session_id)


def _path_query(session_id: str, head_id: str, min_depth: int) -> Select[Any]:
    """Rows of the ancestors of ``head_id`` (inclusive) with ``depth >= min_depth``, oldest first."""
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
    return (
        select(messages)
        .join(walk, messages.c.id == walk.c.id)
        .where(messages.c.depth >= min_depth)
        .order_by(messages.c.depth)
    )


class _HeadMoved(Exception):
    pass


def _run_values(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "session_id": run.session_id,
        "branch_id": run.branch_id,
        "user_id": run.user_id,
        "replica_id": run.replica_id,
        "background": run.background,
        "last_sequence_number": run.last_sequence_number,
        "create_time": run.create_time,
    }
