"""The chat engine in process: validation, context trimming, branches, request ids.

Every refusal is checked to have stored nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from parley.domain.chat import ChatLimits
from parley.domain.errors import AlreadyExists, InvalidArgument, NotFound, Reason
from parley.domain.models import Branch, Session
from parley.domain.names import new_id
from parley.domain.pagination import page_request
from parley.providers.llm.base import ChatTurn
from parley.runs.events import Completed

from tests.domain.conftest import MakeDomain
from tests.support.scripted import Domain, Script, collect


async def _texts(domain: Domain, session: Session, branch: str = "") -> list[str]:
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, branch, page_request(0, ""))
    return [m.text for m in page]


@pytest.mark.parametrize(
    ("text", "request_id", "reason"),
    [
        ("", "", Reason.EMPTY_MESSAGE),
        (" \n\t", "", Reason.EMPTY_MESSAGE),
        ("x" * 101, "", Reason.MESSAGE_TOO_LONG),
        ("fine", "r" * 9, Reason.INVALID_FIELD),
    ],
)
async def test_bad_sends_are_refused_and_store_nothing(
    make_domain: MakeDomain, text: str, request_id: str, reason: Reason
) -> None:
    domain = await make_domain(limits=ChatLimits(max_message_chars=100, max_request_id_chars=8))
    session = await domain.new_session()
    await collect(await domain.send(session, "Hello"))
    with pytest.raises(InvalidArgument) as refused:
        await domain.send(session, text, request_id=request_id)
    assert refused.value.reason is reason
    assert await _texts(domain, session) == ["Hello", "Hello there."]
    assert len(domain.provider.requests) == 1


async def test_a_message_that_can_never_fit_is_refused_whole(domain: Domain) -> None:
    domain.provider.window = 100
    session = await domain.new_session()
    with pytest.raises(InvalidArgument) as refused:
        await domain.send(session, "word " * 60)  # 60 + 4 tokens, over 100 - 50 (max output)
    assert refused.value.reason is Reason.CONTEXT_WINDOW_EXCEEDED
    assert await _texts(domain, session) == []


async def test_older_history_is_trimmed_to_the_window(domain: Domain) -> None:
    domain.provider.window = 200  # budget 200 - 100 (max output: half the window)
    session = await domain.new_session(instructions="")
    big = "w " * 30  # 34 tokens as a turn
    for i in range(4):
        domain.provider.play(Script([f"reply {i}"]))
        await collect(await domain.send(session, f"{i} {big}"))
    prompt = domain.provider.requests[-1].turns
    # Budget 100: the newest message (35) + replies (6 each) + as many older messages as fit.
    assert prompt[-1].content.startswith("3 ")
    assert not any(t.content.startswith("0 ") for t in prompt)
    assert domain.provider.count_tokens("test", prompt) <= 100
    assert await _texts(domain, session) == [t for i in range(4) for t in (f"{i} {big}", f"reply {i}")]


async def test_sends_go_to_the_named_branch_and_unknown_branches_are_not_found(domain: Domain) -> None:
    session = await domain.new_session()
    other = await domain.new_session()
    first = await collect(await domain.send(session, "Root"))
    head = first[-1].event
    assert isinstance(head, Completed)
    fork = Branch(
        session.id, new_id(), "fork", head.message.id, head.message.id, 2, *(head.message.create_time,) * 2
    )
    await domain.sessions.create_branch(fork)
    domain.provider.play(Script(["on fork"]))
    await collect(await domain.send(session, "Fork", branch=f"sessions/{session.id}/branches/{fork.id}"))
    assert await _texts(domain, session) == ["Root", "Hello there."]
    assert await _texts(domain, session, f"sessions/{session.id}/branches/{fork.id}") == [
        "Root",
        "Hello there.",
        "Fork",
        "on fork",
    ]
    for branch in (f"sessions/{session.id}/branches/{new_id()}", f"sessions/{other.id}/branches/main"):
        with pytest.raises(NotFound):
            await domain.send(session, "Lost", branch=branch)
    with pytest.raises(NotFound):  # someone else's session
        await domain.chat.send(domain.principal(other.owner_id), session.id, "Mine?")
    assert await _texts(domain, session) == ["Root", "Hello there."]


async def test_a_request_id_is_per_session(domain: Domain) -> None:
    one, two = await domain.new_session(), await domain.new_session()
    await collect(await domain.send(one, "A", request_id="same"))
    await collect(await domain.send(two, "B", request_id="same"))
    assert await _texts(domain, one) == ["A", "Hello there."]
    assert await _texts(domain, two) == ["B", "Hello there."]
    assert len(domain.provider.requests) == 2


async def test_a_request_id_taken_in_a_race_is_already_exists(domain: Domain) -> None:
    """The unique index catches what the pre-check cannot (two sends racing): nothing half-stored."""
    session = await domain.new_session()
    await collect(await domain.send(session, "A", request_id="dup"))
    engine = domain.chat
    engine._replay = _no_replay  # type: ignore[method-assign]  # as if the first send were not visible yet
    with pytest.raises(AlreadyExists) as taken:
        await domain.send(session, "B", request_id="dup")
    assert taken.value.reason is Reason.DUPLICATE_REQUEST_ID
    assert await _texts(domain, session) == ["A", "Hello there."]
    assert domain.admission.replies_of(session.owner_id) == 0  # the slot was given back


async def _no_replay(*args: object) -> None:
    return None


@pytest.mark.parametrize("blocks", [False, True])
async def test_a_provider_whose_counting_blocks_counts_off_the_event_loop(
    domain: Domain, blocks: bool
) -> None:
    """``count_tokens_blocks`` (the local model asks its engine process): the prompt is built in a
    worker thread, so the event loop never waits for another process; otherwise on the loop."""
    loop_thread = threading.get_ident()
    seen: set[int] = set()
    count = domain.provider.count_tokens

    def recording(model: str, turns: Sequence[ChatTurn]) -> int:
        if not domain.provider.requests:  # building the prompt (the double counts its usage too)
            seen.add(threading.get_ident())
        return count(model, turns)

    domain.provider.count_tokens = recording  # type: ignore[method-assign]
    domain.provider.count_tokens_blocks = blocks  # type: ignore[attr-defined]
    session = await domain.new_session(instructions="Be brief.")
    domain.provider.play(Script(["hi"]))
    events = await collect(await domain.send(session, "hello"))
    assert isinstance(events[-1].event, Completed)
    assert seen
    assert (loop_thread in seen) is not blocks
