"""The tool loop in process: a scripted model calls tools; client tools and approvals pause the
run; results go back to the model; every step is in the message tree.

HTTP tools call a real local HTTP server (allowed by the domain's SSRF guard: 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from parley.domain.errors import FailedPrecondition, InvalidArgument, Reason
from parley.domain.models import MessageStatus, Role, StopReason, ToolKind, ToolSpec
from parley.domain.pagination import page_request
from parley.runs.events import ActionRequired, Completed, Delta, ToolAnswered, ToolCalled, ToolInputs
from parley.storage.sql.tables import usage_records

from tests.domain.conftest import MakeDomain
from tests.support.scripted import Domain, Script, collect

CLOCK = ToolSpec("get_time", "The current time.", {"type": "object", "properties": {}}, ToolKind.CLIENT)


class _Weather(BaseHTTPRequestHandler):
    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(body)
        answer = json.dumps({"city": body.get("city"), "sky": "clear"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def weather_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Weather)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/weather"
    server.shutdown()
    server.server_close()


def _weather(url: str, *, approval: bool = False) -> ToolSpec:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return ToolSpec("weather", "Weather in a city.", schema, ToolKind.HTTP, approval, url)


async def _history(domain: Domain, session) -> list:  # type: ignore[no-untyped-def,type-arg]
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, "", page_request(0, ""))
    return list(page)


def _kinds(events: list) -> list[str]:  # type: ignore[type-arg]
    return [type(e.event).__name__ for e in events]


async def test_a_client_tool_round_trip_pauses_and_resumes(domain: Domain) -> None:
    session = await domain.new_session(tools=[CLOCK])
    domain.provider.play(Script(["Let me check."], calls=[("get_time", "{}")]), Script(["It is noon."]))
    first = await collect(await domain.send(session, "What time is it?"))
    assert _kinds(first) == ["Accepted", "Delta", "ToolCalled", "ActionRequired"]
    waiting = first[-1].event
    assert isinstance(waiting, ActionRequired) and [c.name for c in waiting.tool_outputs] == ["get_time"]
    call_id = waiting.tool_outputs[0].id
    stored = await domain.messages.get(session.id, waiting.message_id)
    assert stored is not None and stored.status is MessageStatus.REQUIRES_ACTION
    assert [c.id for c in stored.tool_calls] == [call_id] and stored.text == "Let me check."
    # The client runs the tool and answers (from any connection).
    inputs = ToolInputs({call_id: ('{"time": "12:00"}', False)}, {})
    rest = await collect(
        await domain.replies.submit(session.owner_id, session.id, waiting.message_id, inputs, deadline=None)
    )
    assert _kinds(rest) == ["ToolAnswered", "Delta", "UsageReport", "Completed"]
    assert rest[0].sequence_number == first[-1].sequence_number + 1
    final = rest[-1].event
    assert isinstance(final, Completed) and final.message.text == "It is noon."
    history = await _history(domain, session)
    assert [(m.role, m.status) for m in history] == [
        (Role.USER, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.COMPLETE),
        (Role.TOOL, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.COMPLETE),
    ]
    assert history[1].stop_reason is StopReason.TOOL_USE and history[2].tool_call_id == call_id
    assert history[2].text == '{"time": "12:00"}' and history[3] == final.message
    # The model saw its call and the result on the second step.
    second = domain.provider.requests[1].turns
    assert [t.role for t in second[-2:]] == ["assistant", "tool"]
    assert second[-2].tool_calls[0].id == call_id and second[-1].tool_call_id == call_id
    # The whole stream, resumed from 0, is the same events, numbered the same.
    whole = await collect(await domain.resume(session, waiting.message_id))
    assert whole == first + rest


async def test_bad_submissions_change_nothing(domain: Domain) -> None:
    session = await domain.new_session(tools=[CLOCK])
    domain.provider.play(
        Script([], calls=[("get_time", "{}"), ("get_time", '{"tz": "UTC"}')]), Script(["ok"])
    )
    first = await collect(await domain.send(session, "Times?"))
    waiting = first[-1].event
    assert isinstance(waiting, ActionRequired) and len(waiting.tool_outputs) == 2
    one, two = (c.id for c in waiting.tool_outputs)

    async def submit(outputs: dict[str, tuple[str, bool]], name: str | None = None):  # type: ignore[no-untyped-def]
        return await domain.replies.submit(
            session.owner_id, session.id, name or waiting.message_id, ToolInputs(outputs, {}), deadline=None
        )

    for outputs in ({one: ("1", False)}, {one: ("1", False), two: ("2", False), "call_nope": ("x", False)}):
        with pytest.raises(InvalidArgument) as bad:
            await submit(outputs)
        assert bad.value.reason is Reason.UNKNOWN_TOOL_CALL
    user_message = first[0].event.user_message.id
    with pytest.raises(InvalidArgument) as not_a_reply:
        await submit({one: ("1", False), two: ("2", False)}, user_message)
    assert not_a_reply.value.reason is Reason.NOT_AN_ASSISTANT_MESSAGE
    # Still waiting, untouched: a send to the branch is refused, the right answer works.
    with pytest.raises(FailedPrecondition) as busy:
        await domain.send(session, "Hello?")
    assert busy.value.reason is Reason.REPLY_REQUIRES_ACTION
    rest = await collect(await submit({one: ("1", False), two: ("2", True)}))
    assert [e.event.is_error for e in rest if isinstance(e.event, ToolAnswered)] == [False, True]
    with pytest.raises(FailedPrecondition) as done:
        await submit({one: ("1", False), two: ("2", False)})
    assert done.value.reason is Reason.REPLY_NOT_WAITING


async def test_http_tools_run_at_once_and_approvals_pause(domain: Domain, weather_url: str) -> None:
    session = await domain.new_session(tools=[_weather(weather_url)])
    domain.provider.play(Script([], calls=[("weather", '{"city": "Oslo"}')]), Script(["Clear in Oslo."]))
    events = await collect(await domain.send(session, "Weather?"))
    assert _kinds(events) == ["Accepted", "ToolCalled", "ToolAnswered", "Delta", "UsageReport", "Completed"]
    answer = events[2].event
    assert isinstance(answer, ToolAnswered) and json.loads(answer.output) == {"city": "Oslo", "sky": "clear"}
    assert _Weather.calls[-1] == {"city": "Oslo"}

    guarded = await domain.new_session(tools=[_weather(weather_url, approval=True)])
    for approved in (False, True):
        before = len(_Weather.calls)
        domain.provider.play(Script([], calls=[("weather", '{"city": "Rome"}')]), Script(["Done."]))
        first = await collect(await domain.send(guarded, "Weather in Rome?"))
        waiting = first[-1].event
        assert isinstance(waiting, ActionRequired) and waiting.tool_outputs == ()
        assert waiting.approvals[0].require_approval and len(_Weather.calls) == before  # not run yet
        inputs = ToolInputs({}, {waiting.approvals[0].id: (approved, "" if approved else "not now")})
        rest = await collect(
            await domain.replies.submit(
                guarded.owner_id, guarded.id, waiting.message_id, inputs, deadline=None
            )
        )
        result = rest[0].event
        assert isinstance(result, ToolAnswered)
        if approved:
            assert not result.is_error and len(_Weather.calls) == before + 1
        else:
            assert result.is_error and result.output == "the user denied this call: not now"
            assert len(_Weather.calls) == before


async def test_an_unknown_tool_and_a_refused_address_are_results_the_model_sees(
    make_domain: MakeDomain, weather_url: str
) -> None:
    domain = await make_domain(allowed_hosts=())  # 127.0.0.1 is not allowed here
    session = await domain.new_session(tools=[_weather(weather_url), CLOCK])
    domain.provider.play(
        Script([], calls=[("weather", '{"city": "Oslo"}'), ("teleport", "{}")]), Script(["Sorry."])
    )
    events = await collect(await domain.send(session, "Weather?"))
    answers = [e.event for e in events if isinstance(e.event, ToolAnswered)]
    assert [a.is_error for a in answers] == [True, True]
    assert "teleport" in answers[1].output and "get_time" in answers[1].output
    calls = [e.event.call for e in events if isinstance(e.event, ToolCalled)]
    assert [c.kind for c in calls] == [ToolKind.HTTP, ToolKind.UNKNOWN]
    assert isinstance(events[-1].event, Completed) and events[-1].event.message.text == "Sorry."


async def test_the_last_step_is_offered_no_tools(make_domain: MakeDomain) -> None:
    domain = await make_domain(max_steps=3)
    session = await domain.new_session(tools=[_weather("http://127.0.0.1:9/")])
    for _ in range(2):
        domain.provider.play(Script([], calls=[("weather", '{"city": "X"}')]))
    domain.provider.play(Script(["Giving up on the weather."]))
    events = await collect(await domain.send(session, "Weather?"))
    assert [len(r.tools) for r in domain.provider.requests] == [1, 1, 0]
    final = events[-1].event
    assert isinstance(final, Completed) and final.message.stop_reason is StopReason.END_TURN
    # Usage sums the steps; each step's message keeps its own.
    history = await _history(domain, session)
    steps = [m for m in history if m.role is Role.ASSISTANT]
    assert len(steps) == 3
    totals = await domain.usage.totals(usage_records.c.session_id == session.id, None, None)
    assert totals.input_tokens == sum(m.input_tokens for m in steps)
    assert totals.output_tokens == sum(m.output_tokens for m in steps)
    usage = events[-2].event
    assert (usage.input_tokens, usage.output_tokens) == (totals.input_tokens, totals.output_tokens)


async def test_a_reply_waits_only_so_long(make_domain: MakeDomain) -> None:
    domain = await make_domain(tool_wait_s=0.2)
    session = await domain.new_session(tools=[CLOCK])
    domain.provider.play(Script(["Checking."], calls=[("get_time", "{}")]))
    first = await collect(await domain.send(session, "Time?", background=True))
    waiting = first[-1].event
    assert isinstance(waiting, ActionRequired)
    await asyncio.sleep(0.5)
    reply = await domain.messages.get(session.id, waiting.message_id)
    assert reply is not None
    assert (reply.status, reply.stop_reason) == (MessageStatus.INCOMPLETE, StopReason.ACTION_EXPIRED)
    # The unanswered call is left out of the next prompt (providers refuse a call without a result).
    domain.provider.play(Script(["Hi."]))
    await collect(await domain.send(session, "Never mind."))
    last = domain.provider.requests[-1].turns
    assert all(not t.tool_calls for t in last) and [t.content for t in last if t.role == "assistant"] == [
        "Checking."
    ]


async def test_cancelling_a_waiting_reply(domain: Domain) -> None:
    session = await domain.new_session(tools=[CLOCK])
    domain.provider.play(Script(["Hold on."], calls=[("get_time", "{}")]))
    first = await collect(await domain.send(session, "Time?"))
    waiting = first[-1].event
    assert isinstance(waiting, ActionRequired)
    cancelled = await domain.replies.cancel(session.owner_id, session.id, waiting.message_id)
    assert (cancelled.status, cancelled.stop_reason) == (MessageStatus.INCOMPLETE, StopReason.CANCELLED)
    domain.provider.play(Script(["Ready."]))
    after = await collect(await domain.send(session, "Again"))
    assert isinstance(after[-1].event, Completed) and any(isinstance(e.event, Delta) for e in after)
