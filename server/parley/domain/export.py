"""Export and import of whole sessions (docs/export.md; the format is domain/export_format.py).

An export streams the session, its agent, its branches and every message of the tree, paging
through the messages (``PAGE_MESSAGES`` per SQL query and content-store call) so memory stays
bounded whatever the session's size; the file goes out in ``CHUNK_BYTES`` pieces. The export is
read while the session may change: lines written later may show messages newer than the
branches read first (the file stays valid).

An import checks the whole file first (nothing is stored for a bad file), then stores a new
session of the caller with new ids and the same tree, branches and active branch, in one SQL
transaction plus content writes that are undone on failure (storage/transfer.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import InvalidArgument, NotFound, Reason, ResourceExhausted
from parley.domain.export_format import (
    ParsedExport,
    encode_agent,
    encode_branch,
    encode_end,
    encode_header,
    encode_message,
    encode_session,
    line,
    parse_export,
)
from parley.domain.models import Agent, Branch, Message, MessageStatus, Session
from parley.domain.names import agent_name, new_id, session_name
from parley.storage.messages import MessageStore
from parley.storage.sql.agents import AgentStore
from parley.storage.sql.sessions import SessionStore
from parley.storage.transfer import TransferStore

__all__ = ["CHUNK_BYTES", "PAGE_MESSAGES", "SessionTransfer"]

#: Messages read per page of an export.
PAGE_MESSAGES = 200
#: Bytes per ExportSessionResponse (the last one may be shorter).
CHUNK_BYTES = 64 * 1024
#: Branches read per page of an export.
_PAGE_BRANCHES = 500
_MAIN = "main"
_UNFINISHED = (MessageStatus.IN_PROGRESS, MessageStatus.REQUIRES_ACTION)


class SessionTransfer:
    """Export the caller's sessions as files, and import such files as new sessions."""

    def __init__(
        self,
        sessions: SessionStore,
        agents: AgentStore,
        messages: MessageStore,
        transfer: TransferStore,
        *,
        import_max_bytes: int,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._agents = agents
        self._messages = messages
        self._transfer = transfer
        self._max_bytes = import_max_bytes
        self._now = clock

    # --- export ---------------------------------------------------------------------------------

    async def export(self, owner_id: str, session_id: str) -> AsyncIterator[bytes]:
        """The export file of one of the owner's sessions, in chunks of at most ``CHUNK_BYTES``
        (joined: the file). ``NotFound`` (before the first chunk) if absent or another user's."""
        session = await self._sessions.get(owner_id, session_id)
        agent = None if session is None else await self._agents.get(owner_id, session.agent_id)
        if session is None or agent is None:
            raise NotFound.resource(session_name(session_id))
        pending = bytearray()
        async for chunk in self._lines(session, agent):
            pending += chunk
            while len(pending) >= CHUNK_BYTES:
                yield bytes(pending[:CHUNK_BYTES])
                del pending[:CHUNK_BYTES]
        if pending:
            yield bytes(pending)

    async def export_bytes(self, owner_id: str, session_id: str) -> bytes:
        """The whole export file of a session at once (for the archive)."""
        return b"".join([chunk async for chunk in self.export(owner_id, session_id)])

    async def _lines(self, session: Session, agent: Agent) -> AsyncIterator[bytes]:
        yield line(encode_header(session.id, self._now()))
        yield line(encode_session(session))
        yield line(encode_agent(agent))
        n_branches = n_messages = 0
        after: str | None = None
        while True:
            page = await self._sessions.list_branches(session.id, after, _PAGE_BRANCHES)
            for branch in page:
                yield line(encode_branch(branch))
            n_branches += len(page)
            if len(page) < _PAGE_BRANCHES:
                break
            after = page[-1].id
        after = None
        while True:
            messages = await self._messages.session_page(session.id, after, PAGE_MESSAGES)
            for message in messages:
                yield line(encode_message(message))
            n_messages += len(messages)
            if len(messages) < PAGE_MESSAGES:
                break
            after = messages[-1].id
        yield line(encode_end(n_branches, n_messages))

    # --- import ---------------------------------------------------------------------------------

    async def import_(self, owner_id: str, data: bytes, agent_id: str | None) -> Session:
        """Store the export file ``data`` as a new session of ``owner_id``.

        With ``agent_id`` (one of the owner's agents, else ``NotFound``) the session talks to
        that agent; without, a copy of the exported agent is created for the owner. Raises
        ``InvalidArgument`` (``MISSING_FIELD`` for no data; ``INVALID_EXPORT`` naming the line
        for a bad file) and ``ResourceExhausted`` (``EXPORT_TOO_LARGE``) over the import limit;
        in each case nothing is stored.
        """
        if not data:
            raise InvalidArgument.field("data", "an export file is required", reason=Reason.MISSING_FIELD)
        if len(data) > self._max_bytes:
            raise ResourceExhausted(
                f"the file is {len(data)} bytes; this server imports at most {self._max_bytes}",
                reason=Reason.EXPORT_TOO_LARGE,
                metadata={"limit_bytes": str(self._max_bytes), "size_bytes": str(len(data))},
            )
        parsed = parse_export(data)
        now = self._now()
        new_agent: Agent | None = None
        if agent_id is not None:
            if await self._agents.get(owner_id, agent_id) is None:
                raise NotFound.resource(agent_name(agent_id))
        else:
            new_agent = replace(
                parsed.agent, id=new_id(), owner_id=owner_id, create_time=now, update_time=now
            )
            agent_id = new_agent.id
        session, tree, branches = _renamed(parsed, owner_id, agent_id, now)
        await self._transfer.insert_session(session, new_agent, tree, branches)
        return session


def _renamed(
    parsed: ParsedExport, owner_id: str, agent_id: str, now: datetime
) -> tuple[Session, list[Message], list[Branch]]:
    """The file's records with new ids (messages in file order, so their UUIDv7s keep the
    order), owned by ``owner_id``. Replies still unfinished in the file are stored INCOMPLETE:
    no run of this server writes them."""
    session_id = new_id()
    ids = {m.id: new_id() for m in parsed.messages}
    branch_ids = {b.id: b.id if b.id == _MAIN else new_id() for b in parsed.branches}

    def ref(old: str | None) -> str | None:
        return None if old is None else ids[old]

    tree = list(_messages(parsed.messages, session_id, ids))
    branches = [
        replace(
            b,
            session_id=session_id,
            id=branch_ids[b.id],
            head_id=ref(b.head_id),
            fork_point_id=ref(b.fork_point_id),
        )
        for b in parsed.branches
    ]
    session = Session(
        session_id,
        owner_id,
        agent_id,
        parsed.session.title,
        branch_ids[parsed.session.active_branch_id],
        now,
        now,
    )
    return session, tree, branches


def _messages(messages: list[Message], session_id: str, ids: dict[str, str]) -> Iterator[Message]:
    for m in messages:
        yield replace(
            m,
            id=ids[m.id],
            session_id=session_id,
            parent_id=None if m.parent_id is None else ids[m.parent_id],
            run_id=ids[m.run_id] if m.run_id else "",
            status=MessageStatus.INCOMPLETE if m.status in _UNFINISHED else m.status,
        )
