"""Two replicas in process: two domains on one database and one real Redis (Debian's
``redis-server``, started for this module), as runs/shared.py wires them with
``PARLEY_REDIS_URL``. A run lives on the replica that started it; the other follows, cancels,
answers and limits it through Redis.

Times here are upper bounds of waits (a cancel within a second is the API's promise), never
measurements of speed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from parley.domain.errors import FailedPrecondition, InvalidArgument, Reason, ResourceExhausted, Unavailable
from parley.domain.models import MessageStatus, Quota, Role, StopReason, ToolKind, ToolSpec
from parley.domain.pagination import page_request
from parley.runs.codec import decode_event, encode_event
from parley.runs.events import Accepted, ActionRequired, Completed, Delta, Failed, ToolInputs, UsageReport

from tests.domain.conftest import MakeDomain
from tests.support.redis import RedisServer
from tests.support.scripted import Domain, Script, collect, first

CLOCK = ToolSpec("get_time", "The current time.", {"type": "object", "properties": {}}, ToolKind.CLIENT)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
async def pair(make_domain: MakeDomain, redis_server: RedisServer) -> AsyncIterator[tuple[Domain, Domain]]:
    """Replicas ``a`` and ``b`` of one deployment."""
    a = await make_domain(redis_url=redis_server.url)
    b = await make_domain(redis_url=redis_server.url)
    yield a, b


def _text(events: list) -> str:  # type: ignore[type-arg]
    return "".join(e.event.text for e in events if isinstance(e.event, Delta))


async def test_a_run_on_one_replica_is_resumed_on_the_other(pair: tuple[Domain, Domain]) -> None:
    a, b = pair
    session = await a.new_session()
    a.provider.play(Script([f"w{i} " for i in range(30)], delay_s=0.01))
    head, rest = await first(await a.send(session, "Count", background=True), 5)
    accepted = head[0].event
    assert isinstance(accepted, Accepted)
    reply_id = accepted.assistant_message_id
    # Replica b follows the run from 3 while it is written on a, then to its end.
    followed = await collect(await b.resume(session, reply_id, 3))
    assert [e.sequence_number for e in followed][:3] == [4, 5, 6]
    assert isinstance(followed[-1].event, Completed)
    whole = head + await collect(rest)  # type: ignore[arg-type]
    assert followed == whole[3:]
    # From 0, b replays exactly what a's own subscriber saw.
    assert await collect(await b.resume(session, reply_id, 0)) == whole


async def test_a_cancel_through_the_other_replica_stops_the_run_within_a_second(
    pair: tuple[Domain, Domain],
) -> None:
    a, b = pair
    session = await a.new_session()
    a.provider.play(Script([f"t{i} " for i in range(400)], delay_s=0.02))
    head, rest = await first(await a.send(session, "Write a lot", background=True), 4)
    reply_id = head[0].event.assistant_message_id  # type: ignore[union-attr]
    started = time.monotonic()
    stored = await b.replies.cancel(session.owner_id, session.id, reply_id)
    assert time.monotonic() - started < 1.0
    assert stored.status is MessageStatus.INCOMPLETE and stored.stop_reason is StopReason.CANCELLED
    tail = await collect(rest)  # type: ignore[arg-type]
    assert [type(e.event) for e in tail[-2:]] == [UsageReport, Completed]
    assert tail[-1].event.message.text == stored.text  # type: ignore[union-attr]
    # Cancelling again, from either replica, returns the stored reply unchanged.
    assert await a.replies.cancel(session.owner_id, session.id, reply_id) == stored
    assert await b.replies.cancel(session.owner_id, session.id, reply_id) == stored


async def test_the_reply_limit_holds_across_replicas(pair: tuple[Domain, Domain]) -> None:
    a, b = pair
    a.default_quota = b.default_quota = Quota(max_concurrent_replies=1)
    one = await a.new_session()
    two = await b.sessions.create(*(await _second_session(a, one.owner_id, one.agent_id)))
    a.provider.play(Script(["slow"], hang_at=0))
    running = await a.send(one, "Hang", background=True)
    await first(running, 1)
    with pytest.raises(ResourceExhausted) as refused:
        await b.send(two, "Me too")
    assert refused.value.reason is Reason.TOO_MANY_CONCURRENT_REPLIES
    # Nothing was stored for the refused send.
    assert (await b.sessions.get(two.owner_id, two.id)) is not None
    page, _ = await b.chat.list_messages(two.owner_id, two.id, "", page_request(0, ""))
    assert list(page) == []
    reply_id = (await collect_first(a, one))[0]
    await a.replies.cancel(one.owner_id, one.id, reply_id)
    # The slot is free again on every replica (released through Redis).
    await _eventually(lambda: _admits(b, two))


async def test_sends_to_one_branch_through_two_replicas_are_serialized(pair: tuple[Domain, Domain]) -> None:
    a, b = pair
    a.default_quota = b.default_quota = Quota()  # no reply limit: six sends wait at once
    session = await a.new_session()
    a.provider.play(*[Script(["a", "1"], delay_s=0.02) for _ in range(3)])
    b.provider.play(*[Script(["b", "2"], delay_s=0.02) for _ in range(3)])

    async def send(domain: Domain, text: str) -> None:
        await collect(await domain.send(session, text))

    await asyncio.gather(*(send(d, f"{d is a}-{i}") for i in range(3) for d in (a, b)))
    page, _ = await a.chat.list_messages(session.owner_id, session.id, "", page_request(0, ""))
    messages = list(page)
    assert len(messages) == 12
    # One chain: user, assistant, user, assistant ..., each message the child of the one before.
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT] * 6
    assert all(m.parent_id == p.id for p, m in itertools.pairwise(messages))
    assert all(m.status is MessageStatus.COMPLETE for m in messages)


async def test_tool_outputs_sent_to_the_other_replica_resume_the_run(pair: tuple[Domain, Domain]) -> None:
    a, b = pair
    session = await a.new_session(tools=[CLOCK])
    a.provider.play(Script(["Checking."], calls=[("get_time", "{}")]), Script(["Noon."]))
    paused = await collect(await a.send(session, "Time?"))
    waiting = paused[-1].event
    assert isinstance(waiting, ActionRequired)
    call_id = waiting.tool_outputs[0].id
    # Another send to the branch, on either replica, is refused while the reply waits.
    for replica in (a, b):
        with pytest.raises(FailedPrecondition) as busy:
            await replica.send(session, "Hello?")
        assert busy.value.reason is Reason.REPLY_REQUIRES_ACTION
    # Wrong inputs are refused by the owner, with its error, and change nothing.
    with pytest.raises(InvalidArgument) as wrong:
        await b.replies.submit(
            session.owner_id,
            session.id,
            waiting.message_id,
            ToolInputs({"call_x": ("1", False)}, {}),
            deadline=None,
        )
    assert wrong.value.reason is Reason.UNKNOWN_TOOL_CALL
    inputs = ToolInputs({call_id: ('{"time": "12:00"}', False)}, {})
    rest = await collect(
        await b.replies.submit(session.owner_id, session.id, waiting.message_id, inputs, deadline=None)
    )
    assert rest[0].sequence_number == paused[-1].sequence_number + 1
    assert isinstance(rest[-1].event, Completed) and rest[-1].event.message.text == "Noon."
    # Not waiting any more: a second submit is FAILED_PRECONDITION on both replicas.
    for replica in (a, b):
        with pytest.raises(FailedPrecondition) as done:
            await replica.replies.submit(
                session.owner_id, session.id, waiting.message_id, inputs, deadline=None
            )
        assert done.value.reason is Reason.REPLY_NOT_WAITING


async def test_deleting_a_session_on_one_replica_stops_its_run_on_the_other(
    pair: tuple[Domain, Domain],
) -> None:
    a, b = pair
    session = await a.new_session()
    a.provider.play(Script(["long"], hang_at=0))
    subscription = await a.send(session, "Hang", background=True)
    await first(subscription, 1)
    await b.runs.cancel_session(session.id)
    await _eventually(lambda: _no_runs(a))
    tail = await collect(subscription)
    assert isinstance(tail[-1].event, Completed)
    assert tail[-1].event.message.stop_reason is StopReason.CANCELLED


async def test_the_output_quota_holds_across_replicas(pair: tuple[Domain, Domain]) -> None:
    a, b = pair
    a.default_quota = b.default_quota = Quota(output_tokens_per_day=10)
    session = await a.new_session(max_output_tokens=4)
    other = await b.sessions.create(*(await _second_session(a, session.owner_id, session.agent_id)))
    a.provider.play(*[Script(["x"] * 4, delay_s=0.01) for _ in range(3)])
    b.provider.play(*[Script(["y"] * 4, delay_s=0.01) for _ in range(3)])

    async def send(domain: Domain, target, text: str) -> int:  # type: ignore[no-untyped-def]
        try:
            events = await collect(await domain.send(target, text))
        except ResourceExhausted as exc:
            assert exc.reason is Reason.QUOTA_EXCEEDED
            return 0
        return events[-1].event.message.output_tokens  # type: ignore[union-attr]

    spent = await asyncio.gather(*(send(d, s, "go") for d, s in [(a, session), (b, other)] * 3))
    assert 0 < sum(spent) <= 10
    # The stored usage agrees with what was counted.
    totals = await a.usage.day_totals(session.owner_id, _midnight())
    assert totals.output_tokens == sum(spent)


async def test_a_change_on_one_replica_reaches_the_others_caller_cache(
    make_domain: MakeDomain, redis_server: RedisServer
) -> None:
    a = await make_domain(redis_url=redis_server.url, read_cache_s=60.0)
    b = await make_domain(redis_url=redis_server.url, read_cache_s=60.0)
    session = await a.new_session()
    caller = await b.users.caller(session.owner_id, "family-1")
    assert caller is not None and not caller.user.disabled
    await a.users.update_user(session.owner_id, caller.user.update_time, disabled=True)

    async def disabled_on_b() -> bool:
        seen = await b.users.caller(session.owner_id, "family-1")
        return seen is not None and seen.user.disabled

    await _eventually(disabled_on_b, within=2.0)  # far below the 60 s TTL: the invalidation came
    # Agents too: b caches one, a renames it, b sees the new name.
    cached = await b.agents.get(session.owner_id, session.agent_id)
    assert cached is not None and cached.display_name == "Agent"
    await a.agents.update(session.owner_id, session.agent_id, {"display_name": "Renamed"}, cached.update_time)

    async def renamed_on_b() -> bool:
        seen = await b.agents.get(session.owner_id, session.agent_id)
        return seen is not None and seen.display_name == "Renamed"

    await _eventually(renamed_on_b, within=2.0)


async def test_redis_down_refuses_new_sends_and_lets_running_replies_finish(
    make_domain: MakeDomain,
) -> None:
    redis = RedisServer().start()
    try:
        a = await make_domain(redis_url=redis.url)
        session = await a.new_session()
        a.provider.play(Script([f"w{i} " for i in range(20)], delay_s=0.02), Script(["back"]))
        _, rest = await first(await a.send(session, "Go", background=True), 3)
        redis.stop()
        tail = await collect(rest)  # type: ignore[arg-type]
        assert isinstance(tail[-1].event, Completed)
        assert tail[-1].event.message.status is MessageStatus.COMPLETE
        with pytest.raises(Unavailable) as down:
            await a.send(session, "Again")
        assert down.value.reason is Reason.REDIS_UNAVAILABLE
        page, _ = await a.chat.list_messages(session.owner_id, session.id, "", page_request(0, ""))
        assert len(list(page)) == 2  # the refused send stored nothing
        redis.start()
        events = await _eventually_send(a, session, "Again")
        assert isinstance(events[-1].event, Completed) and _text(events) == "back"
    finally:
        redis.close()


def test_every_event_survives_the_codec() -> None:
    from datetime import UTC, datetime

    from parley.domain.models import Message, ToolCall
    from parley.runs.events import AudioReady, ToolAnswered, ToolCalled, TranscriptReady

    now = datetime.now(UTC)
    call = ToolCall("call_1", "get_time", '{"tz": "UTC"}', ToolKind.CLIENT, True)
    message = Message(
        "m",
        "s",
        None,
        0,
        Role.USER,
        "مرحبا",
        MessageStatus.COMPLETE,
        StopReason.NONE,
        "",
        0,
        0,
        now,
        tool_calls=(call,),
    )
    events = [
        Accepted(message, "r", "main"),
        TranscriptReady("مرحبا", "ar", 1.25),
        Delta("é"),
        AudioReady(bytes(range(256)), "mp3", 24000, 3, "Hi.", "en"),
        ToolCalled("s", "r", call),
        ToolAnswered("s", "call_1", "{}", True, "t"),
        ActionRequired("s", "r", (call,), (), now),
        UsageReport(3, 4),
        Completed(message),
    ]
    for event in events:
        assert decode_event(encode_event(event)) == event
    failed = decode_event(
        encode_event(Failed(Unavailable("down", reason=Reason.PROVIDER_ERROR, metadata={"p": "x"})))
    )
    assert isinstance(failed, Failed) and isinstance(failed.error, Unavailable)
    assert (failed.error.message, failed.error.reason, failed.error.metadata) == (
        "down",
        Reason.PROVIDER_ERROR,
        {"p": "x"},
    )


# --- helpers -------------------------------------------------------------------------------------


async def _second_session(domain: Domain, owner_id: str, agent_id: str):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from parley.domain.models import Branch, Session
    from parley.domain.names import new_id
    from parley.domain.sessions import MAIN_BRANCH_ID

    now = datetime.now(UTC)
    session = Session(new_id(), owner_id, agent_id, "", MAIN_BRANCH_ID, now, now)
    return session, Branch(session.id, MAIN_BRANCH_ID, "main", None, None, 0, now, now)


async def collect_first(domain: Domain, session) -> list[str]:  # type: ignore[no-untyped-def]
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, "", page_request(0, ""))
    return [m.id for m in page if m.role is Role.ASSISTANT]


async def _admits(domain: Domain, session) -> bool:  # type: ignore[no-untyped-def]
    domain.provider.play(Script(["ok"]))
    try:
        await collect(await domain.send(session, "Now?"))
    except ResourceExhausted:
        return False
    return True


async def _no_runs(domain: Domain) -> bool:
    return domain.runs.live_runs() == 0


async def _eventually(predicate, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def _eventually_send(domain: Domain, session, text: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + 10
    while True:
        try:
            return await collect(await domain.send(session, text))
        except Unavailable:
            assert time.monotonic() < deadline, "Redis did not come back"
            await asyncio.sleep(0.2)


def _midnight():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
