"""Reading a page of history costs a constant number of queries, whatever its depth.

A session of 1,000 messages on ``main`` (depths 0-999) is forked at depth 500: a branch whose
head is main's depth-499 message gets 500 messages of its own (its path is 1,000 deep too).
Everything is built through the storage layer (``UserStore``, ``AgentStore``, ``SessionStore``,
``MessageStore``), once per content store. Then pages of 50 are read at depths 0, 500 and 990 of
both branches, counting SQL statements (SQLAlchemy's ``before_cursor_execute`` event on the
engine) and MongoDB commands (a ``pymongo.monitoring.CommandListener``). The counts must be the
same for every page: one SQL statement for the path (a recursive query) and one content-store
call (a second SQL statement, or one MongoDB ``find``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from parley.domain.models import Agent, Branch, Message, MessageStatus, Role, Session, StopReason, User
from parley.domain.names import new_id
from parley.storage.content.base import ContentStore
from parley.storage.messages import MessageStore
from parley.storage.sql.agents import AgentStore
from parley.storage.sql.engine import Database
from parley.storage.sql.sessions import SessionStore
from parley.storage.sql.users import UserStore
from pymongo import monitoring
from sqlalchemy import event

MakeStore = Callable[..., Awaitable[ContentStore]]

MAIN_DEPTH = 1000
FORK_AT = 500  # the fork's first own message has this depth
PAGE = 50


class MongoCommands(monitoring.CommandListener):
    """Counts the commands a client sends (connection handshakes excluded)."""

    HANDSHAKE = frozenset(
        {"hello", "ismaster", "isMaster", "ping", "saslStart", "saslContinue", "endSessions"}
    )

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in self.HANDSHAKE:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class Counts:
    sql: list[str] = field(default_factory=list)
    mongo: list[str] = field(default_factory=list)


@contextmanager
def counting(db: Database, commands: MongoCommands) -> Iterator[Counts]:
    counts = Counts()

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counts.sql.append(statement)

    commands.names.clear()
    event.listen(db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield counts
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", on_execute)
        counts.mongo = list(commands.names)


def _message(session_id: str, parent: Message | None, depth: int, text: str) -> Message:
    return Message(
        id=new_id(),
        session_id=session_id,
        parent_id=parent.id if parent else None,
        depth=depth,
        role=Role.USER if depth % 2 == 0 else Role.ASSISTANT,
        text=text,
        status=MessageStatus.COMPLETE,
        stop_reason=StopReason.NONE if depth % 2 == 0 else StopReason.END_TURN,
        model="" if depth % 2 == 0 else "local/test",
        input_tokens=0,
        output_tokens=0,
        create_time=datetime.now(UTC),
    )


async def _build(db: Database, repo: MessageStore) -> tuple[str, str, str]:
    """The session (main 0-999, fork at 500 with 500 more); returns session, main head, fork head."""
    now = datetime.now(UTC)
    user = User(new_id(), f"pager-{uuid.uuid4().hex[:10]}", "Pager", now, now)
    await UserStore(db).create_user(user, "not-a-real-hash")
    agent = Agent(new_id(), user.id, "Pager", "", "local", None, 0, "", "", now, now)
    await AgentStore(db).create(agent)
    session = Session(new_id(), user.id, agent.id, "deep", "main", now, now)
    sessions = SessionStore(db)
    await sessions.create(session, Branch(session.id, "main", "main", None, None, 0, now, now))

    parent: Message | None = None
    fork_point: Message | None = None
    for depth in range(MAIN_DEPTH):
        message = _message(session.id, parent, depth, f"main {depth}")
        assert await repo.append(message, "main", parent.id if parent else None)
        if depth == FORK_AT - 1:
            fork_point = message
        parent = message
    assert parent is not None and fork_point is not None
    main_head = parent.id

    fork = Branch(session.id, new_id(), "fork", fork_point.id, fork_point.id, FORK_AT, now, now)
    await sessions.create_branch(fork)
    parent = fork_point
    for depth in range(FORK_AT, MAIN_DEPTH):
        message = _message(session.id, parent, depth, f"fork {depth}")
        assert await repo.append(message, fork.id, parent.id)
        parent = message
    return session.id, main_head, parent.id


@pytest.mark.parametrize("kind", ["sql", "mongo"])
async def test_a_page_costs_the_same_queries_at_any_depth(
    kind: str, db: Database, make_store: MakeStore
) -> None:
    commands = MongoCommands()
    content = await make_store(kind, db, event_listeners=[commands])
    repo = MessageStore(db, content)
    session_id, main_head, fork_head = await _build(db, repo)
    await repo.path(session_id, main_head, 0, 1)  # warm up: connections, dialect checks

    measured: dict[tuple[str, int], Counts] = {}
    for branch, head in (("main", main_head), ("fork", fork_head)):
        for start in (0, 500, 990):
            with counting(db, commands) as counts:
                page = await repo.path(session_id, head, start, PAGE + 1)
            measured[(branch, start)] = counts
            expected_depths = list(range(start, min(start + PAGE + 1, MAIN_DEPTH)))
            assert [m.depth for m in page] == expected_depths
            assert [m.text for m in page] == [
                f"{'fork' if branch == 'fork' and d >= FORK_AT else 'main'} {d}" for d in expected_depths
            ]
            assert all(m.session_id == session_id for m in page)

    sql_counts = {key: len(c.sql) for key, c in measured.items()}
    mongo_counts = {key: len(c.mongo) for key, c in measured.items()}
    print(f"\n{kind}: SQL statements per page {sql_counts}; MongoDB commands per page {mongo_counts}")
    assert set(sql_counts.values()) == ({1} if kind == "mongo" else {2}), sql_counts
    assert set(mongo_counts.values()) == ({1} if kind == "mongo" else {0}), mongo_counts
    if kind == "mongo":
        assert {c.mongo[0] for c in measured.values()} == {"find"}

    # The context of a send reads up to 200 messages: still one call, no getMore.
    with counting(db, commands) as counts:
        assert len(await repo.path(session_id, fork_head, 700, 200)) == 200
    assert (len(counts.sql), counts.mongo) == ((1, ["find"]) if kind == "mongo" else (2, []))
