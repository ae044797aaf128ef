"""Crash safety: a run whose process stopped heartbeating is swept; a live one is left alone.

Two ``Domain`` objects on one database stand for two server processes (replicas). A process
that "dies" is one whose sweeper stopped without deregistering (as after ``kill -9``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from parley.domain.errors import Reason, Unavailable
from parley.domain.models import MessageStatus, StopReason
from parley.runs.sweep import SERVER_LOST_DETAIL

from tests.domain.conftest import MakeDomain
from tests.support.scripted import Domain, Script, first


async def _kill(domain: Domain) -> None:
    """Stop a domain like ``kill -9``: its runs stop mid-write, its lease is not given back."""
    assert domain.sweeper._task is not None
    domain.sweeper._task.cancel()
    for run in list(domain.runs._live.values()):
        assert run.task is not None
        run.task.cancel()  # the checkpointed text stays; no final write happens below
    domain.messages.finish_reply = _refuse  # type: ignore[method-assign]
    await asyncio.sleep(0.05)


async def _refuse(*args: object) -> bool:
    raise OSError("process is dead")


async def test_a_dead_replicas_reply_is_marked_lost_with_its_checkpointed_text(
    make_domain: MakeDomain,
) -> None:
    dead = await make_domain(checkpoint_s=0.02, lease_s=1)
    survivor = await make_domain(lease_s=1)
    session = await dead.new_session()
    dead.provider.play(Script(["Once", " upon", " a time"], hang_at=2))
    subscription = await dead.send(session, "Story", background=True)
    head, _ = await first(subscription, 3)
    reply_id = head[0].event.assistant_message_id
    await asyncio.sleep(0.1)  # a checkpoint lands
    await _kill(dead)
    in_progress = await survivor.messages.get(session.id, reply_id)
    assert in_progress is not None and in_progress.status is MessageStatus.IN_PROGRESS
    assert await survivor.sweeper.sweep() == 0  # the lease has not expired yet
    with pytest.raises(Unavailable) as elsewhere:
        await survivor.replies.cancel(session.owner_id, session.id, reply_id)
    assert elsewhere.value.reason is Reason.RUN_ON_ANOTHER_REPLICA
    await _expire(survivor, dead.sweeper.replica_id)
    assert await survivor.sweeper.sweep() == 1
    lost = await survivor.messages.get(session.id, reply_id)
    assert lost is not None
    assert (lost.status, lost.stop_reason, lost.text) == (
        MessageStatus.INCOMPLETE,
        StopReason.SERVER_LOST,
        "Once upon",
    )
    assert lost.error_message == SERVER_LOST_DETAIL
    assert await survivor.sweeper.sweep() == 0  # nothing left
    # The user message is intact and the session takes new sends on the same branch.
    page, _ = await survivor.chat.list_messages(session.owner_id, session.id, "", _page())
    assert [m.text for m in page] == ["Story", "Once upon"]


async def test_resuming_a_lost_reply_replays_what_was_kept(make_domain: MakeDomain) -> None:
    dead = await make_domain(checkpoint_s=10, lease_s=1)
    survivor = await make_domain(lease_s=1)
    session = await dead.new_session()
    dead.provider.play(Script(["never checkpointed"], hang_at=0))
    subscription = await dead.send(session, "Hi", background=True)
    head, _ = await first(subscription, 1)
    await _kill(dead)
    await _expire(survivor, dead.sweeper.replica_id)
    events = []
    resumed = await survivor.replies.resume(
        session.owner_id, session.id, head[0].event.assistant_message_id, 0, deadline=None
    )
    async for item in resumed:
        events.append(item)
    reply = events[-1].event.message
    assert reply.status is MessageStatus.FAILED and reply.stop_reason is StopReason.SERVER_LOST


async def test_a_live_replica_keeps_its_runs(make_domain: MakeDomain) -> None:
    owner = await make_domain(lease_s=1)
    other = await make_domain(lease_s=1)
    session = await owner.new_session()
    owner.provider.play(Script(["a", "b"], hang_at=1))
    subscription = await owner.send(session, "Go", background=True)
    await first(subscription, 2)
    await asyncio.sleep(1.5)  # past the lease: the owner's heartbeat (every lease/3) keeps it
    assert await other.sweeper.sweep() == 0
    assert owner.runs.is_live(subscription_run(owner))
    await owner.runs.shutdown(0)


def subscription_run(domain: Domain) -> str:
    return next(iter(domain.runs._live))


async def _expire(domain: Domain, replica_id: str) -> None:
    """Age the dead replica's heartbeat past the lease (instead of waiting for it)."""
    from parley.storage.sql.tables import replicas
    from sqlalchemy import update

    await domain.db.execute(
        update(replicas)
        .where(replicas.c.id == replica_id)
        .values(heartbeat_time=datetime.now(UTC) - timedelta(seconds=60))
    )


def _page():  # type: ignore[no-untyped-def]
    from parley.domain.pagination import page_request

    return page_request(0, "")
