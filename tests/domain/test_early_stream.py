"""A text reply's model request is sent while its turn is written (``parley.providers.llm.early``).

In process, with the scripted provider given ``open`` (what the OpenAI-compatible provider has):
the request goes out before the turn's transaction commits, its events reach nobody until the
turn is stored, and a turn that is not stored closes the request it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from parley.domain.errors import Reason, Unavailable
from parley.domain.pagination import page_request
from parley.providers.llm.base import GenerationRequest, ProviderEvent
from parley.runs.events import Accepted, Completed, Delta

from tests.support.scripted import Domain, ScriptedProvider, collect


@dataclass
class _Opened:
    """An opened scripted stream; records whether it was read and closed."""

    events: AsyncIterator[ProviderEvent]
    read: bool = False
    closed: bool = False

    def __aiter__(self) -> AsyncIterator[ProviderEvent]:
        self.read = True
        return self.events

    async def aclose(self) -> None:
        self.closed = True
        await self.events.aclose()  # type: ignore[attr-defined]


@dataclass
class OpeningProvider(ScriptedProvider):
    """The scripted provider with ``open``: each call is recorded with whether the turn's write
    had finished when the request was sent."""

    opened: list[_Opened] = field(default_factory=list)
    write_done_at_open: list[bool] = field(default_factory=list)
    write_done: asyncio.Event | None = None

    async def open(self, request: GenerationRequest) -> _Opened:
        self.write_done_at_open.append(self.write_done is not None and self.write_done.is_set())
        opened = _Opened(self.stream(request))
        self.opened.append(opened)
        return opened


def _opening(domain: Domain) -> OpeningProvider:
    provider = OpeningProvider()
    domain.provider = provider
    domain.models._providers["scripted"] = provider  # type: ignore[attr-defined]
    return provider


def _slow_writes(domain: Domain, provider: OpeningProvider, *, fail: bool = False, refuse: int = 0) -> None:
    """Make ``start_reply`` take 50 ms (so the early request is sent during it); ``fail``: raise
    UNAVAILABLE; ``refuse``: report the branch moved for that many writes."""
    original = domain.messages.start_reply
    provider.write_done = asyncio.Event()
    refusals = [refuse]

    async def start_reply(*args: Any, **kwargs: Any) -> bool:
        provider.write_done.clear()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        try:
            if fail:
                raise Unavailable("database unavailable", reason=Reason.DATABASE_UNAVAILABLE)
            if refusals[0]:
                refusals[0] -= 1
                return False
            return await original(*args, **kwargs)
        finally:
            provider.write_done.set()  # type: ignore[union-attr]

    domain.messages.start_reply = start_reply  # type: ignore[method-assign]


async def _texts(domain: Domain, session_id: str, owner_id: str) -> list[str]:
    page, _ = await domain.chat.list_messages(owner_id, session_id, "", page_request(0, ""))
    return [m.text for m in page]


async def test_the_request_is_sent_while_the_turn_is_written_and_read_after(domain: Domain) -> None:
    provider = _opening(domain)
    _slow_writes(domain, provider)
    session = await domain.new_session()
    events = await collect(await domain.send(session, "Hello"))
    assert provider.write_done_at_open == [False]  # sent before the write committed
    assert isinstance(events[0].event, Accepted)
    assert [e.event.text for e in events if isinstance(e.event, Delta)] == ["Hello", " there", "."]
    assert isinstance(events[-1].event, Completed)
    assert provider.opened[0].read and provider.opened[0].closed
    assert await _texts(domain, session.id, session.owner_id) == ["Hello", "Hello there."]


async def test_a_turn_that_cannot_be_stored_closes_its_request_and_stores_nothing(domain: Domain) -> None:
    provider = _opening(domain)
    session = await domain.new_session()
    await collect(await domain.send(session, "First"))
    _slow_writes(domain, provider, fail=True)
    with pytest.raises(Unavailable) as refused:
        await domain.send(session, "Second")
    assert refused.value.reason is Reason.DATABASE_UNAVAILABLE
    await asyncio.sleep(0.01)  # the discarded stream closes in a task of its own
    second = provider.opened[-1]
    assert not second.read and second.closed
    assert await _texts(domain, session.id, session.owner_id) == ["First", "Hello there."]
    assert domain.runs.live_runs() == 0


async def test_a_send_retried_after_the_branch_moved_opens_a_new_request(domain: Domain) -> None:
    provider = _opening(domain)
    _slow_writes(domain, provider, refuse=1)
    session = await domain.new_session()
    events = await collect(await domain.send(session, "Hello"))
    assert isinstance(events[-1].event, Completed)
    assert len(provider.opened) == 2
    await asyncio.sleep(0.01)
    assert provider.opened[0].closed and not provider.opened[0].read  # the first try's, discarded
    assert provider.opened[1].read
    assert await _texts(domain, session.id, session.owner_id) == ["Hello", "Hello there."]


async def test_a_provider_without_open_starts_when_the_run_does(domain: Domain) -> None:
    session = await domain.new_session()
    events = await collect(await domain.send(session, "Hello"))
    assert isinstance(events[-1].event, Completed)
    assert len(domain.provider.requests) == 1
