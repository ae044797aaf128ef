"""Helpers of the REST tests: a REST user, Server-Sent Events, JSON error statuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.client import UserClient

__all__ = ["RestUser", "assert_status", "bearer", "built", "sse_events"]


def bearer(user: UserClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.access_token}"}


@dataclass
class RestUser:
    """A registered user (from the gRPC fixtures) talking REST with its access token."""

    user: UserClient
    client: httpx.Client

    def create_agent(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("displayName", "REST agent")
        fields.setdefault("instructions", "You are a helpful assistant. Answer briefly.")
        response = self.client.post("/v1/agents", json=fields)
        assert response.status_code == 200, response.text
        agent: dict[str, Any] = response.json()["agent"]
        return agent

    def create_session(self, agent: str | None = None, title: str = "") -> dict[str, Any]:
        agent = agent or self.create_agent()["name"]
        response = self.client.post("/v1/sessions", json={"agent": agent, "title": title})
        assert response.status_code == 200, response.text
        session: dict[str, Any] = response.json()["session"]
        return session

    def send(self, session: str, text: str, **fields: Any) -> list[dict[str, Any]]:
        """SendMessage over REST, read to the end as Server-Sent Events."""
        with self.client.stream("POST", f"/v1/{session}:sendMessage", json={"text": text, **fields}) as r:
            assert r.status_code == 200, r.read().decode()
            assert r.headers["content-type"].startswith("text/event-stream")
            return list(sse_events(r))

    def messages(self, session: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            response = self.client.get(
                f"/v1/{session}/messages", params={"pageToken": token} if token else {}
            )
            assert response.status_code == 200, response.text
            page = response.json()
            out.extend(page["messages"])
            token = page["nextPageToken"]
            if not token:
                return out


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON messages of a Server-Sent Events stream (``data:`` lines; events end at a blank
    line), as they arrive."""
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []
    if data:
        yield json.loads("\n".join(data))


def assert_status(
    response: httpx.Response, http_status: int, grpc_code: int, reason: str | None = None
) -> dict[str, Any]:
    """The response is ``http_status`` with a JSON ``google.rpc.Status`` body of ``grpc_code``
    (and an ``ErrorInfo`` of ``reason`` in domain ``parley.dev``, if given); returns the body."""
    assert response.status_code == http_status, f"{response.status_code}: {response.text[:2000]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == grpc_code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body.get("details", []), list), body
    if reason is not None:
        infos = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
        assert infos, f"no ErrorInfo in {body}"
        assert infos[0]["domain"] == "parley.dev", body
        assert infos[0]["reason"] == reason, body
    return body


def built(response: httpx.Response) -> bool:
    """False while the server does not implement the RPC yet: then the answer must be
    UNIMPLEMENTED as HTTP 501 with a JSON status (also for streaming RPCs: the error comes before
    any event, so it is an HTTP status, not an SSE body)."""
    if response.status_code == 501:
        assert_status(response, 501, 12)
        return False
    return True
