"""Daily quotas and per-user limits in process: checked before anything is stored, enforced while
a reply streams, exact under concurrent sends, and what usage records say afterwards."""

from __future__ import annotations

import asyncio

import pytest
from parley.domain.errors import Reason, ResourceExhausted
from parley.domain.models import MessageStatus, Quota, StopReason, ToolKind, ToolSpec
from parley.domain.pagination import page_request
from parley.runs.events import Completed
from parley.storage.sql.tables import usage_records

from tests.domain.conftest import MakeDomain
from tests.support.scripted import Domain, Script, collect


async def test_parallel_sends_never_pass_the_output_quota_and_usage_matches_the_messages(
    make_domain: MakeDomain,
) -> None:
    domain = await make_domain(max_replies_per_user=10)
    first = await domain.new_session()
    owner = first.owner_id
    sessions = [first] + [await _another_session(domain, first) for _ in range(5)]
    domain.user_quotas[owner] = Quota(output_tokens_per_day=23)
    for _ in sessions:
        domain.provider.play(Script([f"t{i} " for i in range(8)], delay_s=0.005))
    results = await asyncio.gather(*(_send_all(domain, s, "Go") for s in sessions), return_exceptions=True)
    replies = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ResourceExhausted)]
    assert len(replies) + len(refused) == 6
    stored = [r[-1].event.message for r in replies]
    total = sum(m.output_tokens for m in stored)
    assert total == 23  # exactly the quota: 2 whole replies (16) + 7 of a third, then stop
    cut = [m for m in stored if m.stop_reason is StopReason.QUOTA_EXCEEDED]
    assert cut and all(m.status in (MessageStatus.INCOMPLETE, MessageStatus.FAILED) for m in cut)
    # What the usage records say is what the messages say.
    totals = await domain.usage.totals(usage_records.c.user_id == owner, None, None)
    assert totals.output_tokens == total
    assert totals.input_tokens == sum(m.input_tokens for m in stored)
    # Nothing is left: the next send is refused before anything is stored, with when it resets.
    with pytest.raises(ResourceExhausted) as over:
        await domain.send(sessions[0], "More?")
    assert over.value.reason is Reason.QUOTA_EXCEEDED
    assert over.value.quota_violations and 0 < (over.value.retry_after_s or 0) <= 86_400


#: A client tool: an agent that has one replies through the tool loop (AgentTurn), not TextReply.
_CLOCK = ToolSpec("get_time", "The current time.", {"type": "object", "properties": {}}, ToolKind.CLIENT)


@pytest.mark.parametrize("tools", [(), (_CLOCK,)], ids=["text-reply", "agent-turn"])
@pytest.mark.parametrize(
    ("limit", "text", "output_tokens"),
    [
        (10, "ab cd ef ", 10),  # 3 + 4 + 3 fill the day exactly; the delta of 2 after them is not sent
        (8, "ab cd ", 7),  # 3 + 4, then 3 more would pass 8: a merged delta is not sent in part
    ],
)
async def test_a_delta_of_merged_chunks_takes_its_tokens_from_the_quota(
    domain: Domain, tools: tuple[ToolSpec, ...], limit: int, text: str, output_tokens: int
) -> None:
    """A hosted provider merges the chunks one read brings into one delta (``tokens`` = their
    number): the quota counts the chunks, and the stored reply counts them too when it stops
    before the provider's usage arrives."""
    session = await domain.new_session(tools=tools)
    domain.user_quotas[session.owner_id] = Quota(output_tokens_per_day=limit)
    domain.provider.play(Script(["ab ", "cd ", "ef ", "gh "], tokens=(3, 4, 3, 2)))
    events = await collect(await domain.send(session, "Go"))
    reply = events[-1].event
    assert isinstance(reply, Completed)
    assert reply.message.stop_reason is StopReason.QUOTA_EXCEEDED
    assert reply.message.status is MessageStatus.INCOMPLETE
    assert (reply.message.text, reply.message.output_tokens) == (text, output_tokens)
    stored = await domain.messages.get(session.id, reply.message.id)
    assert stored is not None and stored.output_tokens == output_tokens
    totals = await domain.usage.totals(usage_records.c.user_id == session.owner_id, None, None)
    assert totals.output_tokens == output_tokens


async def test_merged_deltas_of_a_whole_reply_fit_the_quota_exactly(domain: Domain) -> None:
    session = await domain.new_session()
    domain.user_quotas[session.owner_id] = Quota(output_tokens_per_day=12)
    domain.provider.play(Script(["ab ", "cd ", "ef ", "gh"], tokens=(3, 4, 3, 2)))
    reply = (await collect(await domain.send(session, "Go")))[-1].event
    assert isinstance(reply, Completed)
    assert reply.message.status is MessageStatus.COMPLETE and reply.message.output_tokens == 12
    with pytest.raises(ResourceExhausted) as over:  # the day is used up: 12 of 12
        await domain.send(session, "More?")
    assert over.value.reason is Reason.QUOTA_EXCEEDED


async def test_the_input_quota_is_checked_before_anything_is_stored(domain: Domain) -> None:
    session = await domain.new_session(instructions="")
    domain.user_quotas[session.owner_id] = Quota(input_tokens_per_day=30)
    await collect(await domain.send(session, "one two three"))  # 7 tokens + 4 for the turn
    with pytest.raises(ResourceExhausted) as over:
        await domain.send(session, "word " * 20)
    assert over.value.reason is Reason.QUOTA_EXCEEDED
    assert "input tokens per day" in over.value.quota_violations[0].description
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, "", page_request(0, ""))
    assert [m.text for m in page] == ["one two three", "Hello there."]


async def test_the_server_default_applies_where_the_users_own_quota_is_zero(domain: Domain) -> None:
    session = await domain.new_session()
    domain.default_quota = Quota(output_tokens_per_day=2, max_concurrent_replies=4)
    events = await collect(await domain.send(session, "Hi"))
    reply = events[-1].event
    assert isinstance(reply, Completed)
    assert reply.message.stop_reason is StopReason.QUOTA_EXCEEDED and reply.message.text == "Hello there"
    domain.user_quotas[session.owner_id] = Quota(output_tokens_per_day=100)  # an admin raised it
    events = await collect(await domain.send(session, "Hi again"))
    assert events[-1].event.message.status is MessageStatus.COMPLETE


async def test_a_users_own_concurrency_limit_wins(make_domain: MakeDomain) -> None:
    domain = await make_domain(max_replies_per_user=4)
    session = await domain.new_session()
    other = await _another_session(domain, session)
    domain.user_quotas[session.owner_id] = Quota(max_concurrent_replies=1)
    domain.provider.play(Script(["a", "b"], hang_at=1))
    busy = await domain.send(session, "Go", background=True)
    await anext(busy)
    with pytest.raises(ResourceExhausted) as refused:
        await domain.send(other, "Me too")
    assert refused.value.reason is Reason.TOO_MANY_CONCURRENT_REPLIES
    await busy.aclose()
    await domain.runs.shutdown(0)


async def test_a_refused_send_gives_its_reservation_back(domain: Domain) -> None:
    """A send whose store fails (request id taken) must not count against the day."""
    session = await domain.new_session(instructions="")
    domain.user_quotas[session.owner_id] = Quota(input_tokens_per_day=25)
    await collect(await domain.send(session, "one two", request_id="r"))  # 6 tokens
    domain.chat._replay = _none  # type: ignore[method-assign]
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017 - AlreadyExists, refunded each time
            await domain.send(session, "one two", request_id="r")
    await collect(await domain.send(session, "three four"))  # still room: the refusals were refunded


async def _none(*args: object) -> None:
    return None


async def _send_all(domain: Domain, session, text: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    return await collect(await domain.send(session, text))


async def _another_session(domain: Domain, like):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from parley.domain.models import Branch, Session
    from parley.domain.names import new_id

    now = datetime.now(UTC)
    session = Session(new_id(), like.owner_id, like.agent_id, "", "main", now, now)
    return await domain.sessions.create(session, Branch(session.id, "main", "main", None, None, 0, now, now))
