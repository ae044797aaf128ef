"""What happens to a user's data when the account is deleted, beyond its SQL rows.

The user's rows cascade in SQL (agents, sessions, branches, message tree, tokens, usage). Before
that, the user's replies still being generated are stopped, and the ids of their sessions noted;
after it, those sessions' message content is deleted from the content store (SQL or MongoDB)
and the user's quota counters are dropped. Archived sessions' files are deleted before the rows
(their keys live in the rows).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from parley.runs.manager import RunManager
from parley.runs.quotas import QuotaMeter
from parley.storage.messages import MessageStore
from parley.storage.sql.sessions import SessionStore

__all__ = ["LeavingUser"]

log = logging.getLogger(__name__)


class LeavingUser:
    """``parley.domain.accounts.UserData`` of the whole server."""

    def __init__(
        self, sessions: SessionStore, messages: MessageStore, runs: RunManager, quotas: QuotaMeter
    ) -> None:
        self._sessions = sessions
        self._messages = messages
        self._runs = runs
        self._quotas = quotas
        self._pending: dict[str, list[str]] = {}
        self._forget_archive: Callable[[str], Awaitable[None]] | None = None

    def forget_archives_with(self, forget: Callable[[str], Awaitable[None]]) -> None:
        """``forget(session_id)`` deletes a session's archived file, if any (domain/archive.py)."""
        self._forget_archive = forget

    async def before_delete(self, user_id: str) -> None:
        await self._runs.cancel_owner(user_id)
        self._pending[user_id] = list(await self._sessions.ids_of_owner(user_id))
        if self._forget_archive is not None:
            for session_id in self._pending[user_id]:
                try:
                    await self._forget_archive(session_id)
                except Exception:  # the account goes anyway: log the file left behind
                    log.exception("could not delete the archived file of session %s", session_id)

    async def after_delete(self, user_id: str) -> None:
        for session_id in self._pending.pop(user_id, []):
            try:
                await self._messages.delete_session_content(session_id)
            except Exception:  # the rows are gone, so the content is unreachable: log, go on
                log.exception("could not delete the content of session %s", session_id)
        self._quotas.forget(user_id)
