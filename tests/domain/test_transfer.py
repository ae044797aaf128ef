"""Export paging and chunking, and the import's all-or-nothing write, in process on SQLite."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from parley.domain.export import CHUNK_BYTES, PAGE_MESSAGES, SessionTransfer
from parley.domain.export_format import parse_export
from parley.domain.models import (
    Branch,
    Citation,
    CitationSource,
    Message,
    MessageStatus,
    Role,
    Session,
    StopReason,
    ToolCall,
    ToolKind,
)
from parley.domain.names import new_id
from parley.storage.transfer import TransferStore
from sqlalchemy.exc import IntegrityError

from tests.support.scripted import Domain


def _transfer(domain: Domain) -> tuple[SessionTransfer, TransferStore]:
    store = TransferStore(domain.db, domain.content)
    return (
        SessionTransfer(domain.sessions, domain.agents, domain.messages, store, import_max_bytes=1 << 30),
        store,
    )


def _chain(session_id: str, count: int, text_chars: int) -> list[Message]:
    """``count`` messages, each the child of the one before, alternating user and assistant."""
    now = datetime.now(UTC)
    out: list[Message] = []
    for i in range(count):
        role = Role.USER if i % 2 == 0 else Role.ASSISTANT
        out.append(
            Message(
                new_id(),
                session_id,
                out[-1].id if out else None,
                i,
                role,
                f"{i}: " + "ش" * text_chars,  # two UTF-8 bytes each
                MessageStatus.COMPLETE,
                StopReason.END_TURN if role is Role.ASSISTANT else StopReason.NONE,
                "scripted" if role is Role.ASSISTANT else "",
                0,
                3 if role is Role.ASSISTANT else 0,
                now,
            )
        )
    return out


async def test_a_long_session_exports_in_bounded_chunks(domain: Domain) -> None:
    seed = await domain.new_session()
    transfer, store = _transfer(domain)
    count = PAGE_MESSAGES * 2 + 7
    now = datetime.now(UTC)
    session = Session(new_id(), seed.owner_id, seed.agent_id, "long", "main", now, now)
    tree = _chain(session.id, count, 300)
    main = Branch(session.id, "main", "main", tree[-1].id, None, count, now, now)
    await store.insert_session(session, None, tree, [main])

    chunks = [c async for c in transfer.export(session.owner_id, session.id)]
    assert len(chunks) > 2 and all(len(c) <= CHUNK_BYTES for c in chunks)
    assert all(len(c) == CHUNK_BYTES for c in chunks[:-1])
    parsed = parse_export(b"".join(chunks))
    assert [m.id for m in parsed.messages] == [m.id for m in tree]
    assert [m.text for m in parsed.messages] == [m.text for m in tree]


async def test_a_failed_import_transaction_leaves_no_content_and_no_session(domain: Domain) -> None:
    seed = await domain.new_session()
    _, store = _transfer(domain)
    now = datetime.now(UTC)
    session = Session(new_id(), seed.owner_id, seed.agent_id, "doomed", "main", now, now)
    tree = _chain(session.id, 5, 10)
    main = Branch(session.id, "main", "main", tree[-1].id, None, 5, now, now)
    # The same branch twice: the last insert of the transaction fails, after the messages.
    with pytest.raises(IntegrityError):
        await store.insert_session(session, None, tree, [main, replace(main, display_name="again")])
    assert await domain.sessions.get(seed.owner_id, session.id) is None
    assert await domain.content.get_many(session.id, [m.id for m in tree]) == {}
    assert await domain.messages.get(session.id, tree[0].id) is None


async def test_every_field_of_a_message_survives_the_file(domain: Domain) -> None:
    """Tool steps, usage, voice metadata, latencies and citations are written and read back."""
    seed = await domain.new_session()
    transfer, store = _transfer(domain)
    now = datetime.now(UTC)
    session = Session(new_id(), seed.owner_id, seed.agent_id, "rich", "main", now, now)
    user, reply = _chain(session.id, 2, 5)
    user = replace(
        user, transcript_language="ar", audio_duration_s=2.5, transcription_duration_s=0.4, request_id="r1"
    )
    reply = replace(
        reply,
        run_id=reply.id,
        time_to_first_token_s=0.1,
        speech_duration_s=1.5,
        time_to_first_audio_s=0.3,
        generation_duration_s=0.9,
        tool_calls=(ToolCall("call_1", "lookup", '{"q": "x"}', ToolKind.CLIENT, True),),
        citations=(Citation("1: ش", 0, 3, (CitationSource("passage", "s3://kb/doc", "S3", {"page": "2"}),)),),
    )
    main = Branch(session.id, "main", "main", reply.id, None, 2, now, now)
    await store.insert_session(session, None, [user, reply], [main])
    parsed = parse_export(b"".join([c async for c in transfer.export(session.owner_id, session.id)]))
    assert [replace(m, session_id=session.id) for m in parsed.messages] == [user, reply]
