"""Runs over REST: resumable Server-Sent Events (``id:`` lines, ``Last-Event-ID``), ResumeStream
and CancelMessage through Envoy, and errors after the first event as an ``error`` event."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from tests.rest.helpers import RestUser, assert_status, bearer, sse_events
from tests.support.client import new_user
from tests.support.envoy import EnvoyProcess
from tests.support.net import free_port
from tests.support.server import ServerProcess


def _sse_with_ids(response: httpx.Response) -> Iterator[tuple[str | None, dict[str, object]]]:
    """(``id`` field, JSON data) of each Server-Sent Event."""
    event_id: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield event_id, json.loads("\n".join(data))
            event_id, data = None, []


def _kind(event: dict[str, object]) -> str:
    return next(k for k in event if k != "sequenceNumber")


def test_every_streamed_event_carries_its_sequence_number_as_the_sse_id(rest_alice: RestUser) -> None:
    session = rest_alice.create_session()["name"]
    with rest_alice.client.stream("POST", f"/v1/{session}:sendMessage", json={"text": "Say hello."}) as r:
        assert r.status_code == 200
        pairs = list(_sse_with_ids(r))
    assert pairs and all(event_id == event["sequenceNumber"] for event_id, event in pairs)
    assert [int(i) for i, _ in pairs] == list(range(1, len(pairs) + 1))


def test_resume_stream_over_rest_with_starting_after_and_last_event_id(rest_alice: RestUser) -> None:
    agent = rest_alice.create_agent(maxOutputTokens=60, instructions="Write long, detailed stories.")
    session = rest_alice.create_session(agent["name"])["name"]
    body = {"text": "A story about a fox.", "background": True}
    with rest_alice.client.stream("POST", f"/v1/{session}:sendMessage", json=body) as r:
        head = []
        for pair in _sse_with_ids(r):
            head.append(pair)
            if len(head) == 3:
                break  # the browser tab closes
    reply = head[0][1]["messageAccepted"]["assistantMessage"]  # type: ignore[index]
    with rest_alice.client.stream("GET", f"/v1/{reply}:stream", params={"startingAfter": "1"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        after_one = list(_sse_with_ids(r))
    assert after_one[0][0] == "2" and after_one[:2] == head[1:3]
    assert _kind(after_one[-1][1]) == "messageCompleted"
    # An EventSource reconnecting sends Last-Event-ID; Envoy turns it into startingAfter.
    with rest_alice.client.stream("GET", f"/v1/{reply}:stream", headers={"Last-Event-ID": "3"}) as r:
        after_three = list(_sse_with_ids(r))
    assert after_three == after_one[2:]
    # Past the end: an empty stream, 200.
    last = after_one[-1][0]
    assert last is not None
    with rest_alice.client.stream("GET", f"/v1/{reply}:stream", params={"startingAfter": last}) as r:
        assert r.status_code == 200 and list(_sse_with_ids(r)) == []


def test_cancel_message_over_rest(rest_alice: RestUser, rest_bob: RestUser) -> None:
    agent = rest_alice.create_agent(maxOutputTokens=400, instructions="Write long, detailed stories.")
    session = rest_alice.create_session(agent["name"])["name"]
    body = {"text": "A very long story.", "background": True}
    with rest_alice.client.stream("POST", f"/v1/{session}:sendMessage", json=body) as r:
        events = sse_events(r)
        first = next(events)
        assert "textDelta" in next(events)  # the reply has text: cancelled, it is INCOMPLETE
    reply = first["messageAccepted"]["assistantMessage"]
    assert_status(rest_bob.client.post(f"/v1/{reply}:cancel", json={}), 404, 5, "RESOURCE_NOT_FOUND")
    cancelled = rest_alice.client.post(f"/v1/{reply}:cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    message = cancelled.json()["message"]
    assert message["status"] == "STATUS_INCOMPLETE" and message["stopReason"] == "STOP_REASON_CANCELLED"
    assert rest_alice.client.get(f"/v1/{reply}").json()["message"] == message
    user_message = first["messageAccepted"]["userMessage"]["name"]
    assert_status(
        rest_alice.client.post(f"/v1/{user_message}:cancel", json={}), 400, 3, "NOT_AN_ASSISTANT_MESSAGE"
    )
    assert_status(
        rest_alice.client.get(f"/v1/{reply}:stream", params={"startingAfter": "-1"}), 400, 3, "INVALID_FIELD"
    )


@pytest.fixture(scope="module")
def failing_envoy(
    server_factory: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    """Envoy in front of a server with a provider ``down`` that nothing answers."""
    server = server_factory(
        openai_compatible=json.dumps({"down": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}}),
        provider_max_retries="0",
    )
    proc = EnvoyProcess(server.target, tmp_path_factory.mktemp("envoy-failing"))
    proc.start()
    yield proc
    proc.stop()


def test_an_error_after_the_first_event_is_an_sse_error_event(failing_envoy: EnvoyProcess) -> None:
    with grpc.insecure_channel(failing_envoy.upstream) as channel:
        user = new_user(channel, prefix="sse-error")
    with httpx.Client(base_url=failing_envoy.base_url, headers=bearer(user), timeout=60) as client:
        agent = client.post("/v1/agents", json={"displayName": "Down", "model": "down/any"}).json()["agent"]
        session = client.post("/v1/sessions", json={"agent": agent["name"]}).json()["session"]["name"]
        with client.stream("POST", f"/v1/{session}:sendMessage", json={"text": "Hello?"}) as r:
            assert r.status_code == 200  # the first event was sent: the HTTP status is taken
            events = [event for _, event in _sse_with_ids(r)]
    assert [_kind(e) for e in events] == ["messageAccepted", "error"]
    error = events[1]["error"]
    assert isinstance(error, dict) and error["code"] == 14
    info = next(d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert (info["reason"], info["domain"], info["metadata"]["provider"]) == (
        "PROVIDER_UNAVAILABLE",
        "parley.dev",
        "down",
    )
