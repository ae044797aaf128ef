"""Archiving sessions: their message content moves to the archive as an export file, and comes
back by itself when it is read.

``archive``: export the session (domain/export.py), write the file to the archive
(storage/archive.py: a directory or S3) under a key of its own, record key, size and SHA-256 on
the session with one compare-and-set that also checks that no message was stored and no reply
is unfinished since the export, then delete the content of the exported messages from the
content store (one call). The tree, the branches and the usage stay in SQL, so lists, branches
and usage still answer without a restore.

``restore`` (called by ``MessageStore`` when a read finds content missing, so reading messages,
sending, regenerating or exporting an archived session all restore it): read the file, check
size and checksum, put the content back, clear the record (compare-and-set: one of concurrent
restores wins) and delete the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import defaultdict
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timedelta

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Reason, Unavailable
from parley.domain.export import SessionTransfer
from parley.domain.export_format import parse_export
from parley.domain.models import Session
from parley.domain.names import new_id, session_name
from parley.storage.archive import ArchiveStore
from parley.storage.messages import MessageStore
from parley.storage.sql.sessions import SessionStore
from parley.storage.transfer import ArchiveRecord, TransferStore

__all__ = ["IdleArchiver", "SessionArchive"]

log = logging.getLogger(__name__)


class SessionArchive:
    """Archive the caller's sessions and restore them on demand (see the module docstring)."""

    def __init__(
        self,
        sessions: SessionStore,
        messages: MessageStore,
        transfer: TransferStore,
        exports: SessionTransfer,
        store: ArchiveStore,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._messages = messages
        self._transfer = transfer
        self._exports = exports
        self._store = store
        self._now = clock
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def archive(self, owner_id: str, session_id: str) -> Session:
        """Move the session's content to the archive; the session, with ``archive_time`` set.
        An archived session comes back unchanged. Raises ``NotFound`` (absent or another
        user's), ``FailedPrecondition`` (``REPLY_IN_PROGRESS``: a reply is being generated or
        waits for tool outputs, or a message arrived while archiving) and ``Unavailable``
        (``ARCHIVE_UNAVAILABLE``)."""
        session = await self._owned(owner_id, session_id)
        if session.archive_time is not None:
            return session
        if await self._transfer.has_unfinished(session_id):
            raise _busy()
        data = await self._exports.export_bytes(owner_id, session_id)
        message_ids = [m.id for m in parse_export(data).messages]
        record = ArchiveRecord(
            self._store.key_for(session_id, new_id()),
            len(data),
            hashlib.sha256(data).hexdigest(),
            self._now(),
        )
        await self._store.put(record.key, data)
        if not await self._transfer.mark_archived(
            session_id, record, message_ids[-1] if message_ids else None
        ):
            with suppress(Unavailable):
                await self._store.delete(record.key)
            current = await self._owned(owner_id, session_id)
            if current.archive_time is not None:  # another call archived it meanwhile
                return current
            raise _busy()
        await self._messages.free_contents(session_id, message_ids)
        log.info(
            "archived session %s: %d messages, %d bytes at %s",
            session_id,
            len(message_ids),
            len(data),
            record.key,
        )
        return await self._owned(owner_id, session_id)

    async def restore(self, session_id: str) -> bool:
        """Bring an archived session's content back; False if it is not archived. Raises
        ``Unavailable`` (``ARCHIVE_UNAVAILABLE``) when the file cannot be read or does not match
        its recorded size and checksum; the session then stays archived."""
        if await self._transfer.archive_of(session_id) is None:
            return False
        lock = self._locks[session_id]
        try:
            async with lock:
                return await self._restore_locked(session_id)
        finally:
            if not lock.locked():
                self._locks.pop(session_id, None)

    async def _restore_locked(self, session_id: str) -> bool:
        record = await self._transfer.archive_of(session_id)
        if record is None:  # restored by the call that held the lock
            return True
        try:
            data = await self._store.get(record.key)
        except Unavailable:
            if await self._transfer.archive_of(session_id) is None:  # another replica won
                return True
            raise
        if len(data) != record.size or hashlib.sha256(data).hexdigest() != record.sha256:
            raise Unavailable(
                f"the archived file of {session_name(session_id)} does not match its checksum",
                reason=Reason.ARCHIVE_UNAVAILABLE,
            )
        try:
            parsed = parse_export(data)
        except InvalidArgument as exc:
            raise Unavailable(
                f"the archived file of {session_name(session_id)} is unreadable: {exc.message}",
                reason=Reason.ARCHIVE_UNAVAILABLE,
            ) from None
        restored = [replace(m, session_id=session_id) for m in parsed.messages]
        await self._messages.put_contents(session_id, restored)
        if await self._transfer.mark_restored(session_id, record.key, self._now()):
            with suppress(Unavailable):
                await self._store.delete(record.key)
            log.info("restored session %s: %d messages", session_id, len(restored))
        return True

    async def forget(self, session_id: str) -> None:
        """Delete the archived file of a session about to be deleted (nothing if not archived)."""
        record = await self._transfer.archive_of(session_id)
        if record is not None:
            await self._store.delete(record.key)

    def now(self) -> datetime:
        """The archive's clock."""
        return self._now()

    async def _owned(self, owner_id: str, session_id: str) -> Session:
        session = await self._sessions.get(owner_id, session_id)
        if session is None:
            raise NotFound.resource(session_name(session_id))
        return session


def _busy() -> FailedPrecondition:
    return FailedPrecondition(
        "a reply of this session is being generated or waits for tool outputs; archive it once it ends",
        reason=Reason.REPLY_IN_PROGRESS,
    )


class IdleArchiver:
    """Archives sessions idle longer than ``idle_s`` (no change and no restore), looking every
    ``every_s`` seconds, ``batch`` sessions at a time (``PARLEY_ARCHIVE_IDLE_SECONDS``). Every
    replica may run one: the archive's compare-and-set lets one of them win per session."""

    def __init__(
        self,
        archive: SessionArchive,
        transfer: TransferStore,
        *,
        idle_s: float,
        every_s: float,
        batch: int = 100,
    ) -> None:
        self._archive = archive
        self._transfer = transfer
        self._idle = timedelta(seconds=idle_s)
        self._every_s = every_s
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="idle archiver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self.archive_idle()
            except Exception as exc:
                log.warning("idle archiving failed: %s", exc)

    async def archive_idle(self) -> int:
        """Archive one batch of idle sessions; how many were archived. A session that is busy
        (a reply running) or whose archiving fails is skipped until the next round."""
        done = 0
        for owner_id, session_id in await self._transfer.idle_sessions(
            self._archive.now() - self._idle, self._batch
        ):
            try:
                await self._archive.archive(owner_id, session_id)
                done += 1
            except (FailedPrecondition, NotFound):
                continue
        return done
