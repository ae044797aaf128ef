"""The path cache (storage/path_cache.py): a send's history comes from memory when this process
wrote the conversation's last turn, and it is exactly what the database would give."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from parley.domain.models import Message, MessageStatus, Role, StopReason
from parley.storage.path_cache import PathCache

from tests.support.scripted import Domain, Script, collect


def _message(
    mid: str, parent: str | None, depth: int, status: MessageStatus = MessageStatus.COMPLETE
) -> Message:
    role = Role.USER if depth % 2 == 0 else Role.ASSISTANT
    return Message(mid, "s", parent, depth, role, mid, status, StopReason.NONE, "", 0, 0, datetime.now(UTC))


def test_a_path_is_served_only_when_whole_and_final() -> None:
    cache = PathCache(per_path=3)
    first, reply = _message("a", None, 0), _message("b", "a", 1, MessageStatus.IN_PROGRESS)
    cache.extend(None, [first, reply])
    assert cache.get("b", 0) is None  # the reply is still being written
    cache.replace(replace(reply, status=MessageStatus.COMPLETE))
    assert [m.id for m in cache.get("b", 0) or []] == ["a", "b"]
    cache.extend("b", [_message("c", "b", 2), _message("d", "c", 3)])
    # Only the newest per_path messages are kept: a read from before them goes to the database.
    assert cache.get("d", 0) is None
    assert [m.id for m in cache.get("d", 1) or []] == ["b", "c", "d"]
    assert cache.get("unknown", 0) is None


def test_the_bound_drops_the_least_recently_used_paths() -> None:
    cache = PathCache(per_path=10, max_messages=4)
    cache.extend(None, [_message("a", None, 0), _message("b", "a", 1)])
    cache.extend(None, [_message("x", None, 0), _message("y", "x", 1)])
    assert cache.get("b", 0) is not None  # b is now the most recently used
    cache.extend(None, [_message("p", None, 0)])
    assert cache.get("y", 0) is None and cache.get("b", 0) is not None


async def test_a_conversation_reads_its_history_from_memory_and_it_matches_the_database(
    domain: Domain,
) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["One."]), Script(["Two."]), Script(["Three."]))
    reads: list[str] = []
    path = domain.messages.path

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(args[1])
        return await path(*args, **kwargs)

    domain.messages.path = counted  # type: ignore[method-assign]
    for text in ("First", "Second", "Third"):
        await collect(await domain.send(session, text))
    # The first send has no history; the next two found theirs in memory.
    assert reads == []
    third = [t.content for t in domain.provider.requests[2].turns]
    assert third[-5:] == ["First", "One.", "Second", "Two.", "Third"]
    # What memory gave is what the database holds.
    branch = await domain.sessions.get_branch(session.id, "main")
    assert branch is not None and branch.head_id is not None
    cached = await domain.messages.recent_path(session.id, branch.head_id, 0)
    assert reads == []
    stored = await path(session.id, branch.head_id, 0, 200)
    assert list(cached) == list(stored)
    assert [m.status for m in stored] == [MessageStatus.COMPLETE] * 6
