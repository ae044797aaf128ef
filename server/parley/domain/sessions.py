"""Sessions: owner-scoped CRUD; every session starts with the branch ``main``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import InvalidArgument, NotFound
from parley.domain.models import Branch, Session
from parley.domain.names import new_id, session_name
from parley.domain.pagination import PageRequest, page_of
from parley.runs.manager import RunManager
from parley.storage.messages import MessageStore
from parley.storage.sql.agents import AgentStore
from parley.storage.sql.sessions import SessionStore

__all__ = ["MAIN_BRANCH_ID", "MAX_TITLE_CHARS", "Sessions"]

MAIN_BRANCH_ID = "main"
MAX_TITLE_CHARS = 200


def _check_title(title: str) -> str:
    title = title.strip()
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidArgument.field("session.title", f"at most {MAX_TITLE_CHARS} characters")
    return title


class Sessions:
    """Create, read, retitle and delete the caller's sessions."""

    def __init__(
        self,
        store: SessionStore,
        agents: AgentStore,
        messages: MessageStore,
        runs: RunManager,
        *,
        clock: Clock = utc_now,
        before_delete: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """``before_delete(session_id)`` runs before a session is deleted (the archive drops its
        file there)."""
        self._store = store
        self._before_delete = before_delete
        self._agents = agents
        self._messages = messages
        self._runs = runs
        self._now = clock

    async def create(self, owner_id: str, agent_id: str, title: str) -> Session:
        """Open a session with one of the owner's agents (``NotFound`` otherwise)."""
        title = _check_title(title)
        if await self._agents.get(owner_id, agent_id) is None:
            raise NotFound.resource(f"agents/{agent_id}")
        now = self._now()
        session = Session(new_id(), owner_id, agent_id, title, MAIN_BRANCH_ID, now, now)
        main = Branch(session.id, MAIN_BRANCH_ID, "main", None, None, 0, now, now)
        return await self._store.create(session, main)

    async def get(self, owner_id: str, session_id: str) -> Session:
        """The session; ``NotFound`` if absent or another user's."""
        session = await self._store.get(owner_id, session_id)
        if session is None:
            raise NotFound.resource(session_name(session_id))
        return session

    async def list(
        self, owner_id: str, agent_id: str | None, page: PageRequest
    ) -> tuple[Sequence[Session], str]:
        """A page of the owner's sessions, newest first, optionally of one agent."""
        rows = await self._store.list(owner_id, agent_id, page.after, page.size + 1)
        return page_of(rows, page, lambda session: session.id)

    async def update_title(self, owner_id: str, session_id: str, title: str) -> Session:
        session = await self._store.update(owner_id, session_id, _check_title(title), self._now())
        if session is None:
            raise NotFound.resource(session_name(session_id))
        return session

    async def delete(self, owner_id: str, session_id: str) -> None:
        """Delete the session, its branches and its messages."""
        if await self._store.get(owner_id, session_id) is None:
            raise NotFound.resource(session_name(session_id))
        await self._runs.cancel_session(session_id)
        if self._before_delete is not None:
            await self._before_delete(session_id)
        if not await self._store.delete(owner_id, session_id):
            raise NotFound.resource(session_name(session_id))
        await self._messages.delete_session_content(session_id)
