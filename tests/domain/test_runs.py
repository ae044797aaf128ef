"""Runs in process: a reply outlives its subscriber, can be followed, resumed and cancelled.

Scripted provider, real storage (SQLite); see tests/support/scripted.py. Times here are only
upper bounds of waits, never assertions on speed.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from parley.domain.errors import InvalidArgument, NotFound, Reason, ResourceExhausted
from parley.domain.models import MessageStatus, Role, StopReason
from parley.runs.events import Accepted, Completed, Delta, Failed, UsageReport

from tests.domain.conftest import MakeDomain
from tests.support.scripted import Domain, Script, collect, first


def kinds(events: list) -> list[str]:
    return [type(e.event).__name__ for e in events]


async def wait_for(predicate, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_reply_streams_exact_deltas_and_is_stored_complete(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["Bonjour", ", ", "le monde", "."]))
    events = await collect(await domain.send(session, "Hi"))
    assert kinds(events) == ["Accepted", "Delta", "Delta", "Delta", "Delta", "UsageReport", "Completed"]
    assert [e.sequence_number for e in events] == list(range(1, 8))
    assert "".join(e.event.text for e in events if isinstance(e.event, Delta)) == "Bonjour, le monde."
    completed = events[-1].event
    assert isinstance(completed, Completed)
    reply = completed.message
    assert reply.status is MessageStatus.COMPLETE and reply.stop_reason is StopReason.END_TURN
    stored = await domain.messages.get(session.id, reply.id)
    assert stored == reply
    assert stored.text == "Bonjour, le monde." and stored.output_tokens == 4
    run = await domain.messages.get_run(session.id, reply.id)
    assert run is not None and run.replica_id is None and run.last_sequence_number == 7


async def test_the_reply_is_stored_in_progress_and_checkpointed_while_it_grows(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script([f"w{i} " for i in range(40)], delay_s=0.02))
    subscription = await domain.send(session, "Tell me", background=True)
    head, _ = await first(subscription, 12)
    accepted = head[0].event
    assert isinstance(accepted, Accepted)
    seen = "".join(e.event.text for e in head if isinstance(e.event, Delta))

    async def checkpointed() -> bool:
        m = await domain.messages.get(session.id, accepted.assistant_message_id)
        return m is not None and len(m.text) >= len(seen)

    await wait_for(checkpointed)
    partial = await domain.messages.get(session.id, accepted.assistant_message_id)
    assert partial is not None and partial.status is MessageStatus.IN_PROGRESS
    assert partial.text.startswith(seen) and partial.output_tokens >= 11
    # ListMessages shows it at the head of the branch while it is written.
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, "", _page())
    assert [m.role for m in page] == [Role.USER, Role.ASSISTANT]
    assert page[1].status is MessageStatus.IN_PROGRESS
    rest = await collect(subscription)
    assert isinstance(rest[-1].event, Completed)
    assert rest[-1].event.message.text == "".join(f"w{i} " for i in range(40))


async def test_an_error_mid_stream_is_a_failed_event_and_the_partial_reply_is_kept(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["One", " two", " three"], fail_at=2))
    events = await collect(await domain.send(session, "Count"))
    assert kinds(events) == ["Accepted", "Delta", "Delta", "Failed"]
    failed = events[-1].event
    assert isinstance(failed, Failed) and failed.error.reason is Reason.PROVIDER_ERROR
    reply = await domain.messages.get(session.id, events[0].event.assistant_message_id)
    assert reply is not None
    assert (reply.status, reply.stop_reason, reply.text) == (
        MessageStatus.INCOMPLETE,
        StopReason.ERROR,
        "One two",
    )
    assert reply.error_message == "scripted failure"
    run = await domain.messages.get_run(session.id, reply.id)
    assert run is not None and run.last_sequence_number == 4


async def test_an_error_before_any_text_stores_the_reply_failed(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["never"], fail_at=0))
    events = await collect(await domain.send(session, "Hi"))
    assert kinds(events) == ["Accepted", "Failed"]
    reply = await domain.messages.get(session.id, events[0].event.assistant_message_id)
    assert reply is not None and reply.status is MessageStatus.FAILED and reply.text == ""
    # The user message is kept: nothing the user sent is lost.
    user = await domain.messages.get(session.id, events[0].event.user_message.id)
    assert user is not None and user.text == "Hi"


async def test_cancel_stops_a_hung_provider_and_every_subscriber_gets_completed(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["Partial", " text", " never"], hang_at=2))
    first_sub = await domain.send(session, "Go")
    head, _ = await first(first_sub, 3)
    reply_id = head[0].event.assistant_message_id
    second_sub = await domain.resume(session, reply_id, 0)
    started = time.monotonic()
    cancelled = await domain.replies.cancel(session.owner_id, session.id, reply_id)
    assert time.monotonic() - started < 1.0
    assert (cancelled.status, cancelled.stop_reason, cancelled.text) == (
        MessageStatus.INCOMPLETE,
        StopReason.CANCELLED,
        "Partial text",
    )
    assert domain.provider.closed_early and domain.provider.closed_early[-1][1] == 2
    tail_one = await collect(first_sub)
    everything = await collect(second_sub)
    assert kinds(tail_one) == ["UsageReport", "Completed"]
    assert kinds(everything) == ["Accepted", "Delta", "Delta", "UsageReport", "Completed"]
    assert [e.sequence_number for e in everything] == [1, 2, 3, 4, 5]
    assert tail_one == everything[3:]
    # Idempotent: cancelling a finished reply returns it unchanged.
    assert await domain.replies.cancel(session.owner_id, session.id, reply_id) == cancelled


async def test_the_last_subscriber_leaving_cancels_a_foreground_run(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["a", "b", "c"], hang_at=2))
    subscription = await domain.send(session, "Go")
    head, _ = await first(subscription, 2)
    await subscription.aclose()
    reply = await _finished(domain, session.id, head[0].event.assistant_message_id)
    assert (reply.status, reply.stop_reason, reply.text) == (
        MessageStatus.INCOMPLETE,
        StopReason.CANCELLED,
        "ab",
    )


async def test_a_subscriber_leaving_at_its_deadline_stores_deadline_exceeded(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["a", "b"], hang_at=1))
    subscription = await domain.send(session, "Go", deadline=time.monotonic())
    head, _ = await first(subscription, 2)
    await subscription.aclose()
    reply = await _finished(domain, session.id, head[0].event.assistant_message_id)
    assert reply.stop_reason is StopReason.DEADLINE_EXCEEDED


async def test_a_background_run_completes_without_subscribers_and_replays_the_same_events(
    domain: Domain,
) -> None:
    session = await domain.new_session()
    domain.provider.play(Script([f"t{i} " for i in range(10)], delay_s=0.01))
    subscription = await domain.send(session, "Go", background=True)
    head, _ = await first(subscription, 3)
    await subscription.aclose()  # the client disconnects
    reply = await _finished(domain, session.id, head[0].event.assistant_message_id)
    assert reply.status is MessageStatus.COMPLETE and reply.text == "".join(f"t{i} " for i in range(10))
    replayed = await collect(await domain.resume(session, reply.id, 0))
    assert replayed[:3] == head
    assert [e.sequence_number for e in replayed] == list(range(1, 14))
    assert isinstance(replayed[-1].event, Completed) and replayed[-1].event.message == reply


async def test_resume_after_n_gives_exactly_the_later_events(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["a", "b", "c", "d", "e"], delay_s=0.01))
    original = await collect(await domain.send(session, "Go"))
    reply_id = original[0].event.assistant_message_id
    for n in (0, 1, 4, 7, 8):
        resumed = await collect(await domain.resume(session, reply_id, n))
        assert resumed == original[n:], n
    # Past the last event of a finished run: the stream ends at once.
    assert await collect(await domain.resume(session, reply_id, 99)) == []


async def test_two_live_subscribers_see_the_same_events(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script([f"x{i}" for i in range(20)], delay_s=0.01))
    one = await domain.send(session, "Go")
    head, _ = await first(one, 1)
    two = await domain.replies.resume(
        session.owner_id, session.id, head[0].event.assistant_message_id, 0, deadline=None
    )
    a, b = await asyncio.gather(collect(one), collect(two))
    assert head + a == b
    assert isinstance(b[-1].event, Completed)


async def test_an_evicted_log_is_replayed_from_the_stored_reply(make_domain: MakeDomain) -> None:
    domain = await make_domain(retention_s=0)
    session = await domain.new_session()
    domain.provider.play(Script(["a", "b", "c", "d", "e"]))
    original = await collect(await domain.send(session, "Go"))
    assert len(original) == 8
    reply = original[-1].event.message
    replay = await collect(await domain.resume(session, reply.id, 0))
    assert [(e.sequence_number, type(e.event).__name__) for e in replay] == [
        (1, "Accepted"),
        (2, "Delta"),
        (7, "UsageReport"),
        (8, "Completed"),
    ]
    assert replay[1].event == Delta("abcde") and replay[2].event == UsageReport(reply.input_tokens, 5)
    assert replay[0].event == original[0].event
    # A client that had seen 5 events still ends on the same message_completed.
    tail = await collect(await domain.resume(session, reply.id, 5))
    assert [e.sequence_number for e in tail] == [7, 8] and tail[-1] == original[-1]


async def test_resume_and_cancel_refuse_bad_input(domain: Domain) -> None:
    session = await domain.new_session()
    other = await domain.new_session()
    events = await collect(await domain.send(session, "Hi"))
    accepted = events[0].event
    with pytest.raises(InvalidArgument) as negative:
        await domain.replies.resume(
            session.owner_id, session.id, accepted.assistant_message_id, -1, deadline=None
        )
    assert negative.value.metadata["field"] == "starting_after"
    for call in (
        domain.resume(session, accepted.user_message.id, 0),
        domain.replies.cancel(session.owner_id, session.id, accepted.user_message.id),
    ):
        with pytest.raises(InvalidArgument) as user_message:
            await call
        assert user_message.value.reason is Reason.NOT_AN_ASSISTANT_MESSAGE
    for call in (
        domain.replies.resume(other.owner_id, session.id, accepted.assistant_message_id, 0, deadline=None),
        domain.replies.cancel(other.owner_id, session.id, accepted.assistant_message_id),
    ):
        with pytest.raises(NotFound):
            await call
    stored = await domain.messages.get(session.id, accepted.assistant_message_id)
    assert stored is not None and stored.status is MessageStatus.COMPLETE


async def test_shutdown_stops_running_replies_with_stop_reason_shutdown(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["part", "never"], hang_at=1))
    subscription = await domain.send(session, "Go", background=True)
    head, _ = await first(subscription, 2)
    await domain.runs.shutdown(0.05)
    reply = await domain.messages.get(session.id, head[0].event.assistant_message_id)
    assert reply is not None
    assert (reply.status, reply.stop_reason, reply.text) == (
        MessageStatus.INCOMPLETE,
        StopReason.SHUTDOWN,
        "part",
    )
    await subscription.aclose()


async def test_the_per_user_reply_limit_counts_runs_not_connections(make_domain: MakeDomain) -> None:
    domain = await make_domain(max_replies_per_user=1)
    busy, idle = await domain.new_session(), await domain.new_session()
    # Same owner for both sessions.
    idle = await _session_of(domain, busy.owner_id)
    domain.provider.play(Script(["a", "b"], hang_at=1))
    subscription = await domain.chat.send(domain.principal(busy.owner_id), busy.id, "Go", background=True)
    head, _ = await first(subscription, 2)
    await subscription.aclose()  # a background run keeps its slot without a subscriber
    with pytest.raises(ResourceExhausted) as refused:
        await domain.chat.send(domain.principal(idle.owner_id), idle.id, "Me too")
    assert refused.value.reason is Reason.TOO_MANY_CONCURRENT_REPLIES
    page, _ = await domain.chat.list_messages(idle.owner_id, idle.id, "", _page())
    assert page == []
    await domain.replies.cancel(busy.owner_id, busy.id, head[0].event.assistant_message_id)
    events = await collect(await domain.chat.send(domain.principal(idle.owner_id), idle.id, "Now"))
    assert isinstance(events[-1].event, Completed)


async def test_a_send_to_a_busy_branch_waits_and_appends_after_the_reply(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["first", " reply"], delay_s=0.05), Script(["second"]))
    one = await domain.send(session, "One")
    two_task = asyncio.create_task(domain.send(session, "Two"))
    await asyncio.sleep(0.02)
    assert not two_task.done()  # waiting for the branch
    first_events = await collect(one)
    second_events = await collect(await two_task)
    first_reply = first_events[-1].event.message
    second_user = second_events[0].event.user_message
    assert second_user.parent_id == first_reply.id and second_user.depth == 2
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, "", _page())
    assert [m.text for m in page] == ["One", "first reply", "Two", "second"]


async def test_a_repeated_request_id_follows_the_first_send(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["slow", " one"], delay_s=0.05))
    first_sub = await domain.send(session, "Hi", request_id="req-1")
    retry = await domain.send(session, "Hi", request_id="req-1")
    a, b = await asyncio.gather(collect(first_sub), collect(retry))
    assert a == b and isinstance(a[-1].event, Completed)
    after = await collect(await domain.send(session, "Hi", request_id="req-1"))
    assert after[0].event == a[0].event and after[-1].event == a[-1].event
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, "", _page())
    assert len(page) == 2 and len(domain.provider.requests) == 1


async def test_regenerate_runs_on_a_new_active_branch(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["old"]), Script(["new"]))
    old = (await collect(await domain.send(session, "Hi")))[-1].event.message
    events = await collect(await domain.regenerate(session, old.id))
    accepted, new = events[0].event, events[-1].event.message
    assert accepted.branch_id != "main" and new.parent_id == old.parent_id and new.text == "new"
    refreshed = await domain.sessions.get(session.owner_id, session.id)
    assert refreshed is not None and refreshed.active_branch_id == accepted.branch_id
    branch = await domain.sessions.get_branch(session.id, accepted.branch_id)
    assert branch is not None and branch.head_id == new.id and branch.message_count == 2


async def _finished(domain: Domain, session_id: str, message_id: str):  # type: ignore[no-untyped-def]
    async def done() -> bool:
        m = await domain.messages.get(session_id, message_id)
        return m is not None and m.status is not MessageStatus.IN_PROGRESS

    await wait_for(done)
    return await domain.messages.get(session_id, message_id)


async def _session_of(domain: Domain, owner_id: str):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from parley.domain.models import Branch, Session
    from parley.domain.names import new_id

    now = datetime.now(UTC)
    base = await domain.sessions.list(owner_id, None, None, 1)
    session = Session(new_id(), owner_id, base[0].agent_id, "", "main", now, now)
    return await domain.sessions.create(session, Branch(session.id, "main", "main", None, None, 0, now, now))


def _page():  # type: ignore[no-untyped-def]
    from parley.domain.pagination import page_request

    return page_request(0, "")
