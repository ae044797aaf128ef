"""Branches: named pointers into a session's message tree (docs/design.md, "Conversation model").

Forking copies no message content: a new branch is one row whose head is an existing message,
so the shared prefix is stored once. Deleting a branch removes the pointer and the messages no
other branch reaches (its own suffix); the shared prefix stays.
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import FailedPrecondition, NotFound, Reason
from parley.domain.fields import check_display_name
from parley.domain.models import Branch, Session
from parley.domain.names import branch_name, new_id, parse_branch, parse_message
from parley.domain.pagination import PageRequest, page_of
from parley.runs.manager import RunManager
from parley.storage.messages import MessageStore
from parley.storage.sql.sessions import SessionStore

__all__ = ["Branches"]


class Branches:
    """Fork, list, switch and delete the branches of the caller's sessions."""

    def __init__(
        self, store: SessionStore, messages: MessageStore, runs: RunManager, *, clock: Clock = utc_now
    ) -> None:
        self._store = store
        self._messages = messages
        self._runs = runs
        self._now = clock

    async def _session(self, owner_id: str, session_id: str) -> Session:
        session = await self._store.get(owner_id, session_id)
        if session is None:
            raise NotFound.resource(f"sessions/{session_id}")
        return session

    async def create(self, owner_id: str, session_id: str, from_message: str, display_name: str) -> Branch:
        """Fork the session at ``from_message`` (a message name of this session): the new branch's
        head and fork point are that message. An empty ``from_message`` makes an empty branch, for
        rewriting the first message. Does not switch the active branch.

        Raises ``NotFound`` for a message of another session or user, ``InvalidArgument`` for a
        malformed name or a display name over 100 characters.
        """
        await self._session(owner_id, session_id)
        display_name = check_display_name(display_name, "display_name")
        head_id: str | None = None
        depth = -1
        if from_message:
            message_session, message_id = parse_message(from_message, "from_message")
            message = (
                await self._messages.get(session_id, message_id) if message_session == session_id else None
            )
            if message is None:
                raise NotFound.resource(from_message)
            head_id, depth = message.id, message.depth
        now = self._now()
        branch = Branch(
            session_id=session_id,
            id=new_id(),
            display_name=display_name or (f"Fork at message {depth + 1}" if head_id else "Empty branch"),
            head_id=head_id,
            fork_point_id=head_id,
            message_count=depth + 1,
            create_time=now,
            update_time=now,
        )
        return await self._store.create_branch(branch)

    async def get(self, owner_id: str, name: str, field: str = "name") -> tuple[Branch, Session]:
        """The branch named ``name`` and its session; ``NotFound`` if absent or another user's."""
        session_id, branch_id = parse_branch(name, field)
        session = await self._session(owner_id, session_id)
        branch = await self._store.get_branch(session_id, branch_id)
        if branch is None:
            raise NotFound.resource(name)
        return branch, session

    async def list(
        self, owner_id: str, session_id: str, page: PageRequest
    ) -> tuple[Sequence[Branch], Session, str]:
        """A page of the session's branches, oldest first."""
        session = await self._session(owner_id, session_id)
        rows = await self._store.list_branches(session_id, page.after, page.size + 1)
        page_rows, token = page_of(rows, page, lambda branch: branch.id)
        return page_rows, session, token

    async def set_active(self, owner_id: str, session_id: str, branch: str) -> Session:
        """Make ``branch`` (a branch name of this session) the one sends and reads use by default."""
        branch_session, branch_id = parse_branch(branch, "branch")
        await self._session(owner_id, session_id)
        if branch_session != session_id or await self._store.get_branch(session_id, branch_id) is None:
            raise NotFound.resource(branch)
        session = await self._store.set_active_branch(owner_id, session_id, branch_id, self._now())
        if session is None:
            raise NotFound.resource(f"sessions/{session_id}")
        return session

    async def delete(self, owner_id: str, name: str) -> None:
        """Delete a branch and the messages only it reached (a reply still being generated on it is
        cancelled first). Refuses (FAILED_PRECONDITION) the active branch; the last branch of a
        session is always its active one, and the second check guards a concurrent switch."""
        branch, session = await self.get(owner_id, name)
        if branch.id == session.active_branch_id:
            raise FailedPrecondition(
                f"{name} is the active branch; switch to another branch first", reason=Reason.ACTIVE_BRANCH
            )
        if await self._store.count_branches(session.id) < 2:
            raise FailedPrecondition(f"{name} is the session's last branch", reason=Reason.LAST_BRANCH)
        if branch.head_id is not None:
            await self._runs.cancel(branch.head_id)  # a reply still being written on it
        if not await self._store.delete_branch(session.id, branch.id):
            raise NotFound.resource(branch_name(session.id, branch.id))
        if branch.head_id is not None:
            await self._messages.delete_unreachable(session.id, branch.head_id)
