"""A reply's citations are stored with its content and read back, on every content store.

The message is written and read through ``MessageStore`` (``storage/message_rows.py`` maps the
domain ``Citation`` to ``MessageContent.citations`` and back), once on the SQL content store
(the suite's SQLite file, or PostgreSQL with ``PARLEY_TEST_DATABASE=postgres``) and once on the
MongoDB store (FerretDB, ``tests/support/ferretdb.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from parley.domain.models import (
    Agent,
    Branch,
    Citation,
    CitationSource,
    Message,
    MessageStatus,
    Role,
    Session,
    StopReason,
    User,
)
from parley.domain.names import new_id
from parley.storage.content.base import ContentStore
from parley.storage.messages import MessageStore
from parley.storage.sql.agents import AgentStore
from parley.storage.sql.engine import Database
from parley.storage.sql.sessions import SessionStore
from parley.storage.sql.users import UserStore

MakeStore = Callable[..., Awaitable[ContentStore]]

REPLY = "باريس هي العاصمة. Paris is the capital of France."
CITATIONS = (
    Citation(
        "باريس هي العاصمة",
        0,
        15,
        (
            CitationSource(
                "Paris est la capitale de la France. 🗼",
                "s3://kb/france.txt",
                "S3",
                {"x-amz-bedrock-kb-source-uri": "s3://kb/france.txt", "page": "3"},
            ),
            CitationSource("France: capital Paris.", "https://example.org/fr", "WEB"),
        ),
    ),
    Citation("France", 43, 48),  # a span whose sources were left out
)


async def _session(db: Database) -> Session:
    now = datetime.now(UTC)
    user = User(new_id(), f"citer-{uuid.uuid4().hex[:10]}", "Citer", now, now)
    await UserStore(db).create_user(user, "not-a-real-hash")
    agent = Agent(new_id(), user.id, "Citer", "", "local", None, 0, "", "", now, now)
    await AgentStore(db).create(agent)
    session = Session(new_id(), user.id, agent.id, "cited", "main", now, now)
    await SessionStore(db).create(session, Branch(session.id, "main", "main", None, None, 0, now, now))
    return session


def _message(session: Session, parent: Message | None, role: Role, text: str) -> Message:
    return Message(
        id=new_id(),
        session_id=session.id,
        parent_id=parent.id if parent else None,
        depth=parent.depth + 1 if parent else 0,
        role=role,
        text=text,
        status=MessageStatus.COMPLETE,
        stop_reason=StopReason.END_TURN if role is Role.ASSISTANT else StopReason.NONE,
        model="bedrock-agent/AGENT12345/TSTALIASID" if role is Role.ASSISTANT else "",
        input_tokens=0,
        output_tokens=0,
        create_time=datetime.now(UTC),
    )


@pytest.mark.parametrize("kind", ["sql", "mongo"])
async def test_citations_are_stored_with_the_reply(kind: str, db: Database, make_store: MakeStore) -> None:
    repo = MessageStore(db, await make_store(kind, db))
    session = await _session(db)
    question = _message(session, None, Role.USER, "Capital of France?")
    reply = replace(_message(session, question, Role.ASSISTANT, REPLY), citations=CITATIONS)
    plain = _message(session, reply, Role.USER, "Thanks")
    assert await repo.append(question, "main", None)
    assert await repo.append(reply, "main", question.id)
    assert await repo.append(plain, "main", reply.id)

    got = await repo.get(session.id, reply.id)
    assert got is not None and got.citations == CITATIONS and got.text == REPLY
    page = await repo.path(session.id, plain.id, 0, 10)  # a page of history reads them too
    assert [m.citations for m in page] == [(), CITATIONS, ()]
