"""Messages: the tree in SQL, the content in a ``ContentStore``, put together.

Every read of a page costs one SQL query plus one content-store call, whatever the depth.
Writing stores the content first, then inserts the tree rows and moves the branch head in one
SQL transaction: a head never points at a missing message, and a reply is never stored without
its user message (its parent row exists, enforced by a foreign key). A crash between the two
leaves an unreachable content document at worst. When the content store is a table of the same
database (the embedded default), the hot writes (a turn, a checkpoint, a reply's end) put the
content inside that transaction instead: one commit, and nothing left over if it fails.

A reply is written three times: when its run starts (status IN_PROGRESS, empty text, together
with its user message and its ``runs`` row), at checkpoints while it is generated (text and
output tokens so far), and when the run ends (final status, usage, stop reason).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import AlreadyExists, Reason
from parley.domain.models import Branch, Message, MessageStatus, Role
from parley.storage.content.base import ContentStore
from parley.storage.content.sql import SqlContentStore
from parley.storage.message_rows import (
    RunRecord,
    content_of,
    message_from,
    outcome_values,
    run_from,
    run_values,
    tree_values,
)
from parley.storage.path_cache import PathCache
from parley.storage.sql import hot
from parley.storage.sql.engine import Database
from parley.storage.sql.sessions import branch_values
from parley.storage.sql.tables import branches, messages, runs, sessions
from parley.storage.sql.usage import UsageRecord

__all__ = ["RECENT_PATH_MESSAGES", "MessageStore", "RunRecord"]

#: Most messages :meth:`MessageStore.recent_path` is asked for (the context's read limit).
RECENT_PATH_MESSAGES = 200
#: Content documents per content-store call of a restore.
_CONTENT_BATCH = 500

log = logging.getLogger(__name__)


class MessageStore:
    """Reads and writes whole messages (tree row + content) and the runs that write replies."""

    def __init__(self, db: Database, content: ContentStore, *, paths: PathCache | None = None) -> None:
        self._db = db
        self._content = content
        #: The content store when it is a table of this database (the embedded default): the hot
        #: writes then put a message's content in the same transaction as its metadata (one
        #: commit instead of two, and no content without its row if the transaction fails).
        self._joint = content if isinstance(content, SqlContentStore) and content.db is db else None
        self._paths = paths or PathCache(per_path=RECENT_PATH_MESSAGES)
        self._restore: Callable[[str], Awaitable[bool]] | None = None

    def restore_with(self, restore: Callable[[str], Awaitable[bool]]) -> None:
        """Call ``restore(session_id)`` when a read finds content missing: it brings an archived
        session's content back and says whether it did (domain/archive.py), and the read then
        reads the content again. Without it a missing content is logged and shown empty."""
        self._restore = restore

    # --- archive --------------------------------------------------------------------------------

    async def put_contents(self, session_id: str, written: Sequence[Message]) -> None:
        """Store the content of messages whose tree rows exist (an archive's restore)."""
        for start in range(0, len(written), _CONTENT_BATCH):
            batch = written[start : start + _CONTENT_BATCH]
            await self._content.put_many(session_id, {m.id: content_of(m) for m in batch})

    async def free_contents(self, session_id: str, message_ids: Sequence[str]) -> None:
        """Delete the content of the given messages (one content-store call, so a concurrent read
        finds all of it or none) and forget the paths this process keeps in memory for them."""
        for message_id in message_ids:
            self._paths.forget(message_id)
        await self._content.delete(session_id, message_ids)

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
        """Content first (or, in the table of this database, inside the transaction), then one
        transaction: tree rows, the head move (compare-and-set), the run and usage rows, the
        session's update time."""
        head = written[-1]
        session_id = head.session_id
        contents = {m.id: content_of(m) for m in written}
        if self._joint is None:
            await self._content.put_many(session_id, contents)
        try:
            async with self._db.transaction() as s:
                if new_branch is not None:
                    await s.execute(insert(branches).values(**branch_values(new_branch)))
                    await s.execute(
                        update(sessions)
                        .where(sessions.c.id == session_id)
                        .values(active_branch_id=new_branch.id, update_time=head.create_time)
                    )
                await s.execute(hot.INSERT_MESSAGES, [tree_values(m) for m in written])
                if self._joint is not None:
                    await self._joint.put_many_in(s, session_id, contents)
                moved = await s.execute(
                    hot.MOVE_EMPTY_HEAD if expected_head is None else hot.MOVE_HEAD,
                    {
                        "b_session": session_id,
                        "b_branch": branch_id,
                        "b_expected": expected_head,
                        "head_id": head.id,
                        "message_count": head.depth + 1,
                        "update_time": head.create_time,
                    },
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    raise _HeadMoved
                if run is not None:
                    await s.execute(hot.INSERT_RUN, run_values(run))
                if usage is not None:
                    await s.execute(hot.INSERT_USAGE, usage.values())
                await s.execute(hot.TOUCH_SESSION, {"b_session": session_id, "update_time": head.create_time})
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
        self._paths.extend(written[0].parent_id, written)
        return True

    async def checkpoint(self, reply: Message) -> None:
        """Store the text, output tokens and first-token and first-audio times of a reply that is
        still being generated."""
        counts = {
            "b_id": reply.id,
            "output_tokens": reply.output_tokens,
            "time_to_first_token_s": reply.time_to_first_token_s,
            "time_to_first_audio_s": reply.time_to_first_audio_s,
        }
        if self._joint is None:
            await self._content.put(reply.session_id, reply.id, content_of(reply))
            await self._db.execute(hot.CHECKPOINT, [counts])
            return
        async with self._db.transaction() as s:
            await self._joint.put_many_in(s, reply.session_id, {reply.id: content_of(reply)})
            await s.execute(hot.CHECKPOINT, counts)

    async def finish_reply(
        self,
        reply: Message,
        last_sequence_number: int,
        finish_time: datetime,
        *,
        spent: tuple[int, int] | None = None,
    ) -> bool:
        """Store the final state of ``reply`` (its run's last assistant message), complete its
        run's usage record (``spent``: the run's input and output tokens over all its steps;
        default the reply's own) and mark the run finished. False if the reply was already
        finished (by a sweep) or is gone (its session or branch was deleted)."""
        run_id = reply.run_id or reply.id
        input_tokens, output_tokens = spent or (reply.input_tokens, reply.output_tokens)
        if self._joint is None:
            await self._content.put(reply.session_id, reply.id, content_of(reply))
        async with self._db.transaction() as s:
            if self._joint is not None:
                await self._joint.put_many_in(s, reply.session_id, {reply.id: content_of(reply)})
            done = await s.execute(hot.FINISH_MESSAGE, {"b_id": reply.id, **outcome_values(reply)})
            if done.rowcount:  # type: ignore[attr-defined]
                await s.execute(
                    hot.FINISH_USAGE,
                    {
                        "b_run": run_id,
                        "input_tokens": input_tokens,
                        "output_tokens": output_tokens,
                        "audio_output_s": reply.speech_duration_s or 0.0,
                        "status": reply.status.value,
                    },
                )
            await s.execute(
                hot.FINISH_RUN,
                {
                    "b_run": run_id,
                    "replica_id": None,
                    "last_sequence_number": last_sequence_number,
                    "finish_time": finish_time,
                },
            )
        if done.rowcount:  # type: ignore[attr-defined]
            self._paths.replace(reply)
        else:
            self._paths.forget(reply.id)
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def cut_reply(self, reply: Message) -> bool:
        """Store a finished reply cut short after the fact: its new ``text``, status and stop
        reason (a Converse barge-in keeps what the listener heard). Only a finished assistant
        message (COMPLETE or INCOMPLETE) changes; False when it is gone or not finished."""
        row = await self._db.first(
            select(messages.c.id).where(
                messages.c.id == reply.id,
                messages.c.session_id == reply.session_id,
                messages.c.role == Role.ASSISTANT.value,
                messages.c.status.in_(_FINISHED_TEXT),
            )
        )
        if row is None:
            return False
        await self._content.put(reply.session_id, reply.id, content_of(reply))
        done = await self._db.execute(
            update(messages)
            .where(messages.c.id == reply.id, messages.c.status.in_(_FINISHED_TEXT))
            .values(status=reply.status.value, stop_reason=reply.stop_reason.value)
        )
        if done:
            self._paths.replace(reply)
        return bool(done)

    async def store_step(self, message: Message) -> None:
        """Store the new state of an assistant message of a tool step (its text, tool calls,
        status: COMPLETE with stop reason TOOL_USE, or REQUIRES_ACTION while the run waits)."""
        await self._content.put(message.session_id, message.id, content_of(message))
        await self._db.execute(
            update(messages)
            .where(messages.c.id == message.id, messages.c.status.in_(_UNFINISHED))
            .values(**outcome_values(message))
        )
        self._paths.replace(message)

    async def unfinished_of_run(self, session_id: str, run_id: str) -> Sequence[Message]:
        """The messages of run ``run_id`` still IN_PROGRESS or REQUIRES_ACTION."""
        rows = await self._db.all(
            select(messages).where(
                messages.c.session_id == session_id,
                messages.c.run_id == run_id,
                messages.c.status.in_(_UNFINISHED),
            )
        )
        return await self._with_content(rows)

    async def last_of_run(self, session_id: str, run_id: str) -> Message | None:
        """The newest assistant message of run ``run_id`` (its reply, once finished)."""
        row = await self._db.first(
            select(messages)
            .where(
                messages.c.session_id == session_id,
                messages.c.run_id == run_id,
                messages.c.role == Role.ASSISTANT.value,
            )
            .order_by(messages.c.depth.desc())
            .limit(1)
        )
        found = await self._with_content([row] if row else [])
        return found[0] if found else None

    async def _forget_content(self, session_id: str, message_ids: list[str]) -> None:
        if self._joint is not None:  # written in the transaction that was rolled back
            return
        with contextlib.suppress(Exception):
            await self._content.delete(session_id, message_ids)

    # --- reads ---------------------------------------------------------------------------------

    async def _with_content(self, rows: Sequence[RowMapping]) -> list[Message]:
        if not rows:
            return []
        session_id = rows[0]["session_id"]
        contents = await self._content.get_many(session_id, [r["id"] for r in rows])
        missing = [r["id"] for r in rows if r["id"] not in contents]
        if missing and self._restore is not None and await self._restore(session_id):
            contents = {**contents, **await self._content.get_many(session_id, missing)}
            missing = [r["id"] for r in rows if r["id"] not in contents]
        if missing:
            log.error("content missing for messages %s", missing)
        return [message_from(r, contents.get(r["id"])) for r in rows]

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
        return None if row is None else run_from(row)

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

    async def session_page(self, session_id: str, after: str | None, limit: int) -> Sequence[Message]:
        """Up to ``limit`` messages of the session in creation order (by id: UUIDv7), after the
        message ``after``; one SQL query plus one content-store call (the export's page)."""
        q = select(messages).where(messages.c.session_id == session_id)
        if after is not None:
            q = q.where(messages.c.id > after)
        rows = await self._db.all(q.order_by(messages.c.id).limit(limit))
        return await self._with_content(rows)

    async def path(self, session_id: str, head_id: str, min_depth: int, limit: int) -> Sequence[Message]:
        """Ancestors of ``head_id`` (inclusive) with ``depth >= min_depth``, oldest first, at most
        ``limit`` (the oldest ones). One recursive query walks parent pointers from the head down to
        ``min_depth`` inside the database, then one content-store call."""
        rows = await self._db.all(_path_query(session_id, head_id, min_depth).limit(limit))
        return await self._with_content(rows)

    async def recent_path(self, session_id: str, head_id: str, min_depth: int) -> Sequence[Message]:
        """:meth:`path` to ``head_id`` from ``min_depth`` (at most ``RECENT_PATH_MESSAGES``), from
        the path cache when this process wrote the conversation's last turn
        (storage/path_cache.py), else from the database (and then remembered)."""
        cached = self._paths.get(head_id, min_depth)
        if cached is not None:
            return cached
        found = await self.path(session_id, head_id, min_depth, RECENT_PATH_MESSAGES)
        if found and found[-1].id == head_id:
            self._paths.put(found)
        return found

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


#: Statuses of a message its run may still change.
_UNFINISHED = hot.UNFINISHED
_FINISHED_TEXT = (MessageStatus.COMPLETE.value, MessageStatus.INCOMPLETE.value)


class _HeadMoved(Exception):
    pass
