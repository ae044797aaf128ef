"""SendMessage over REST: the reply streams as Server-Sent Events; a disconnect stops generation."""

from __future__ import annotations

import time

from tests.rest.helpers import RestUser, sse_events


def test_send_message_streams_events_in_order(rest_alice: RestUser) -> None:
    session = rest_alice.create_session()["name"]
    events = rest_alice.send(session, "Hello! What is a good name for a cat?", requestId="rest-send-1")

    assert [int(e["sequenceNumber"]) for e in events] == list(range(1, len(events) + 1))
    kinds = [next(k for k in e if k != "sequenceNumber") for e in events]
    assert kinds[0] == "messageAccepted"
    assert kinds[-1] == "messageCompleted"
    assert kinds[-2] == "usage"
    assert set(kinds[1:-2]) == {"textDelta"}, kinds

    accepted = events[0]["messageAccepted"]
    assert accepted["userMessage"]["text"] == "Hello! What is a good name for a cat?"
    assert accepted["userMessage"]["requestId"] == "rest-send-1"
    assert accepted["branch"] == f"{session}/branches/main"
    reply = events[-1]["messageCompleted"]["message"]
    assert reply["name"] == accepted["assistantMessage"]
    assert reply["text"] == "".join(e["textDelta"]["text"] for e in events[1:-2])
    assert reply["status"] == "STATUS_COMPLETE"
    assert reply["usage"] == events[-2]["usage"]
    assert reply["usage"]["outputTokens"] > 0


def test_events_arrive_while_the_reply_is_generated(rest_alice: RestUser) -> None:
    """Each event is flushed as it is produced, not buffered until the end of the reply."""
    agent = rest_alice.create_agent(maxOutputTokens=200, instructions="You write long, detailed answers.")
    session = rest_alice.create_session(agent["name"])["name"]
    with rest_alice.client.stream(
        "POST", f"/v1/{session}:sendMessage", json={"text": "Describe the four seasons in detail."}
    ) as response:
        assert response.status_code == 200
        arrivals: list[float] = []
        for _event in sse_events(response):
            arrivals.append(time.monotonic())
    assert len(arrivals) > 10
    # Text deltas come spread over the generation time, not in one burst at the end.
    assert arrivals[-1] - arrivals[1] > 0.2


def test_disconnect_mid_stream_stops_generation(rest_alice: RestUser) -> None:
    agent = rest_alice.create_agent(
        maxOutputTokens=400, instructions="You are a storyteller. You tell long, detailed stories."
    )
    session = rest_alice.create_session(agent["name"])["name"]
    with rest_alice.client.stream(
        "POST", f"/v1/{session}:sendMessage", json={"text": "Tell me a very long story about a dragon."}
    ) as response:
        assert response.status_code == 200
        events = []
        for event in sse_events(response):
            events.append(event)
            if len(events) == 4:  # message_accepted and three text deltas
                break
    # Leaving the block closes the connection mid-stream.
    disconnected = time.monotonic()
    assistant = events[0]["messageAccepted"]["assistantMessage"]
    assert all("textDelta" in e for e in events[1:])

    deadline = disconnected + 10
    while True:
        got = rest_alice.client.get(f"/v1/{assistant}")
        assert got.status_code == 200, got.text  # stored (IN_PROGRESS) from the start of the run
        if got.json()["message"]["status"] != "STATUS_IN_PROGRESS":
            break
        assert time.monotonic() < deadline, "the run did not stop after the disconnect"
        time.sleep(0.1)
    message = got.json()["message"]
    assert message["status"] == "STATUS_INCOMPLETE"
    assert message["stopReason"] == "STOP_REASON_CANCELLED"
    # Generation stopped soon after the disconnect, far short of the 400-token budget.
    assert 3 <= message["usage"]["outputTokens"] < 100, message["usage"]
    assert message["text"].startswith("".join(e["textDelta"]["text"] for e in events[1:]))
    # The user message is kept, and the partial reply is on the branch.
    names = [m["name"] for m in rest_alice.messages(session)]
    assert names == [events[0]["messageAccepted"]["userMessage"]["name"], assistant]
