"""Errors over REST: the exact HTTP status, a JSON google.rpc.Status body, and data left intact.

Server errors carry the server's details (ErrorInfo with an UPPER_SNAKE reason in domain
``parley.dev``, BadRequest, RequestInfo); errors Envoy produces itself (unknown path, body too
large, upstream down, malformed JSON, timeouts) have the same shape: an ErrorInfo with a reason of
``enum ErrorReason`` and a RequestInfo with Envoy's request id. A 401 carries the bearer challenge
of RFC 6750 section 3 (``WWW-Authenticate``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import jwt

from tests.conftest import TEST_JWT_SECRET
from tests.rest.helpers import RestUser, assert_status, bearer, built
from tests.support.client import UserClient
from tests.support.envoy import EnvoyProcess, render_module

MAX_REQUEST_BYTES: int = render_module().MAX_REQUEST_BYTES


#: RFC 6750 section 3: the challenge of every 401, and of a 401 to a request that sent a token.
CHALLENGE = 'Bearer realm="parley"'
INVALID_TOKEN_CHALLENGE = 'Bearer realm="parley", error="invalid_token"'


def assert_envoy_status(response: httpx.Response, http_status: int, grpc_code: int, reason: str) -> None:
    """An error Envoy produced itself: the server's JSON status shape, with ErrorInfo ``reason``
    and a RequestInfo holding the response's ``x-request-id``."""
    body = assert_status(response, http_status, grpc_code, reason)
    infos = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.RequestInfo"]
    assert infos and infos[0]["requestId"] == response.headers["x-request-id"], body


def _agents(user: RestUser) -> list[dict[str, Any]]:
    response = user.client.get("/v1/agents", params={"pageSize": 1000})
    assert response.status_code == 200, response.text
    agents: list[dict[str, Any]] = response.json()["agents"]
    return agents


# --- 400 ------------------------------------------------------------------------------------------


def test_empty_text_is_400(rest_alice: RestUser) -> None:
    session = rest_alice.create_session()["name"]
    rest_alice.send(session, "First message")
    before = rest_alice.messages(session)

    response = rest_alice.client.post(f"/v1/{session}:sendMessage", json={"text": ""})
    body = assert_status(response, 400, 3, "EMPTY_MESSAGE")
    violations = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"]
    assert violations and violations[0]["fieldViolations"][0]["field"] == "text"
    whitespace = rest_alice.client.post(f"/v1/{session}:sendMessage", json={"text": "   \n"})
    assert_status(whitespace, 400, 3, "EMPTY_MESSAGE")

    assert rest_alice.messages(session) == before  # nothing stored


def test_request_id_of_an_error_is_the_envoy_request_id(rest_alice: RestUser) -> None:
    """Envoy's x-request-id reaches the server, which reports it in RequestInfo."""
    session = rest_alice.create_session()["name"]
    response = rest_alice.client.post(f"/v1/{session}:sendMessage", json={"text": ""})
    body = assert_status(response, 400, 3)
    infos = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.RequestInfo"]
    assert infos and infos[0]["requestId"] == response.headers["x-request-id"]


def test_malformed_json_and_unknown_fields_are_400(rest_alice: RestUser) -> None:
    agent = rest_alice.create_agent()
    c = rest_alice.client
    for content in (b'{"displayName": ', b"[1, 2]", b'{"displayName": 5}'):  # refused by Envoy
        response = c.post("/v1/agents", content=content, headers={"content-type": "application/json"})
        assert_envoy_status(response, 400, 3, "MALFORMED_REQUEST")
    unknown_field = c.post(
        "/v1/agents", content=b'{"noSuchField": 1}', headers={"content-type": "application/json"}
    )
    assert_status(unknown_field, 400, 3)
    unknown_query = c.get("/v1/agents", params={"noSuchParam": "1"})
    assert_envoy_status(unknown_query, 400, 3, "MALFORMED_REQUEST")
    bad_name = c.get("/v1/agents/not-a-uuid")
    assert_status(bad_name, 400, 3, "INVALID_RESOURCE_NAME")
    assert [a["name"] for a in _agents(rest_alice)] == [agent["name"]]


# --- 401 ------------------------------------------------------------------------------------------


def test_missing_or_bad_token_is_401(http: httpx.Client, rest_alice: RestUser, alice: UserClient) -> None:
    agent = rest_alice.create_agent()
    session = rest_alice.create_session(agent["name"])["name"]

    # No token: the challenge without an error code (RFC 6750 section 3.1).
    no_tokens = [
        http.get("/v1/agents"),
        http.post("/v1/agents", json={"displayName": "x"}),
        # Streaming RPCs refuse before the first event, so it is an HTTP status too.
        http.post(f"/v1/{session}:sendMessage", json={"text": "hi"}),
    ]
    for response in no_tokens:
        assert_status(response, 401, 16, "MISSING_TOKEN")
        assert response.headers["www-authenticate"] == CHALLENGE

    claims = jwt.decode(alice.access_token, options={"verify_signature": False})
    expired = jwt.encode(
        {**claims, "iat": claims["iat"] - 7200, "exp": claims["iat"] - 3600}, TEST_JWT_SECRET
    )
    forged = {"Authorization": f"Bearer {jwt.encode(claims, 'another-secret-another-secret-another-0123')}"}
    bad_tokens = [
        (http.get("/v1/agents", headers={"Authorization": "Bearer not-a-jwt"}), "INVALID_TOKEN"),
        (http.get("/v1/agents", headers={"Authorization": f"Basic {alice.access_token}"}), "INVALID_TOKEN"),
        (http.get("/v1/agents", headers={"Authorization": f"Bearer {expired}"}), "TOKEN_EXPIRED"),
        (http.get("/v1/agents", headers=forged), "INVALID_TOKEN"),
        (http.delete(f"/v1/{agent['name']}", headers=forged), "INVALID_TOKEN"),
        (http.post(f"/v1/{session}:sendMessage", json={"text": "hi"}, headers=forged), "INVALID_TOKEN"),
    ]
    for response, reason in bad_tokens:
        assert_status(response, 401, 16, reason)
        assert response.headers["www-authenticate"] == INVALID_TOKEN_CHALLENGE
    # A wrong password is a 401 too: it gets the challenge, without an error (no token was sent).
    refused = http.post("/v1/tokens", json={"username": alice.username, "password": "not the password"})
    assert_status(refused, 401, 16, "INVALID_CREDENTIALS")
    assert refused.headers["www-authenticate"] == CHALLENGE
    # Only 401s carry it.
    assert "www-authenticate" not in http.get("/v1/users/me", headers=bearer(alice)).headers

    # Intact: the owner still reads both, and nothing was added.
    assert [a["name"] for a in _agents(rest_alice)] == [agent["name"]]
    assert rest_alice.messages(session) == []


# --- 404 ------------------------------------------------------------------------------------------


def test_other_users_agent_is_404(rest_alice: RestUser, rest_bob: RestUser) -> None:
    agent = rest_alice.create_agent(displayName="Alice's", instructions="Private.")
    session = rest_alice.create_session(agent["name"])["name"]
    name = agent["name"]

    assert_status(rest_bob.client.get(f"/v1/{name}"), 404, 5, "RESOURCE_NOT_FOUND")
    patch = rest_bob.client.patch(f"/v1/{name}", json={"displayName": "Bob's now"})
    assert_status(patch, 404, 5, "RESOURCE_NOT_FOUND")
    assert_status(
        rest_bob.client.delete(f"/v1/{name}", params={"force": "true"}), 404, 5, "RESOURCE_NOT_FOUND"
    )
    assert_status(rest_bob.client.post("/v1/sessions", json={"agent": name}), 404, 5, "RESOURCE_NOT_FOUND")
    assert_status(rest_bob.client.get(f"/v1/{session}"), 404, 5, "RESOURCE_NOT_FOUND")
    send = rest_bob.client.post(f"/v1/{session}:sendMessage", json={"text": "hi"})
    assert_status(send, 404, 5, "RESOURCE_NOT_FOUND")
    assert name not in [a["name"] for a in _agents(rest_bob)]

    # Intact: the owner reads the same agent and an empty session.
    assert rest_alice.client.get(f"/v1/{name}").json()["agent"] == agent
    assert rest_alice.client.get(f"/v1/{session}").status_code == 200
    assert rest_alice.messages(session) == []


# --- 409 ------------------------------------------------------------------------------------------


def test_duplicate_username_is_409(http: httpx.Client, alice: UserClient) -> None:
    response = http.post("/v1/users", json={"username": alice.username, "password": "another password 123"})
    assert_status(response, 409, 6, "USERNAME_TAKEN")
    upper = http.post(
        "/v1/users", json={"username": alice.username.upper(), "password": "another password 123"}
    )
    assert_status(upper, 409, 6, "USERNAME_TAKEN")

    # Intact: the original password still logs in, the new one does not.
    assert (
        http.post("/v1/tokens", json={"username": alice.username, "password": alice.password}).status_code
        == 200
    )
    refused = http.post("/v1/tokens", json={"username": alice.username, "password": "another password 123"})
    assert_status(refused, 401, 16)
    me = http.get("/v1/users/me", headers=bearer(alice))
    assert me.json()["user"]["name"] == alice.user_name


# --- 413 / 429: size limits -----------------------------------------------------------------------


def test_body_over_the_limit_is_413(rest_alice: RestUser) -> None:
    before = _agents(rest_alice)
    body = json.dumps({"displayName": "big", "instructions": "a" * MAX_REQUEST_BYTES}).encode()
    size = len(body)
    assert size > MAX_REQUEST_BYTES
    response = rest_alice.client.post(
        "/v1/agents", content=body, headers={"content-type": "application/json"}
    )
    assert_envoy_status(response, 413, 8, "RESOURCE_EXHAUSTED")

    def chunks() -> Any:  # no Content-Length: the limit applies to the bytes as they arrive
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    chunked = rest_alice.client.post(
        "/v1/agents", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_envoy_status(chunked, 413, 8, "RESOURCE_EXHAUSTED")
    assert _agents(rest_alice) == before


def test_largest_voice_message_passes_the_proxy(rest_alice: RestUser) -> None:
    """25 MB of audio is about 33 MB of JSON (base64): under the proxy's limit, so the request
    reaches the server, not a 413. (25 MB of zero bytes is no audio format: the server refuses
    it as UNSUPPORTED_AUDIO, or answers UNIMPLEMENTED while voice is not built.)"""
    session = rest_alice.create_session()["name"]
    audio_b64 = base64.b64encode(bytes(25 * 1000 * 1000)).decode()
    response = rest_alice.client.post(f"/v1/{session}:sendVoiceMessage", json={"audio": audio_b64})
    if built(response):
        assert_status(response, 400, 3, "UNSUPPORTED_AUDIO")
    assert rest_alice.messages(session) == []


def test_message_over_the_server_limit_is_429(rest_alice: RestUser) -> None:
    """A JSON body under the proxy's limit whose binary message is over the server's 26 MiB
    receive limit: the server refuses it with RESOURCE_EXHAUSTED, mapped to 429."""
    before = _agents(rest_alice)
    response = rest_alice.client.post(
        "/v1/agents", json={"displayName": "big", "instructions": "a" * 30_000_000}
    )
    body = assert_status(response, 429, 8)
    assert "larger than max" in body["message"]
    assert _agents(rest_alice) == before


# --- 404 for what is not an RPC, 503 when the server is down ------------------------------------


def test_unknown_paths_are_404(http: httpx.Client, alice: UserClient) -> None:
    auth = bearer(alice)
    for method, path in [
        ("GET", "/v1/nothing-here"),
        ("GET", "/v2/agents"),
        ("POST", "/v1/agents:frobnicate"),
        ("PUT", "/v1/agents"),
        ("GET", "/"),
        ("GET", "/index.html"),
        ("GET", "/docs/nothing-here.js"),
        ("GET", "/parley.v1.AgentService/ListAgents"),
    ]:
        response = http.request(method, path, headers=auth)
        assert_envoy_status(response, 404, 5, "NOT_FOUND")
    # A gRPC client calling a service that is not transcoded gets UNIMPLEMENTED, not a hang.
    grpc = http.post(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        content=b"",
        headers={"content-type": "application/grpc", "te": "trailers"},
    )
    assert grpc.status_code == 200 and grpc.headers["grpc-status"] == "12"


def test_dead_upstream_is_503(dead_upstream_envoy: EnvoyProcess) -> None:
    with httpx.Client(base_url=dead_upstream_envoy.base_url, timeout=30) as client:
        unary = client.post("/v1/tokens", json={"username": "nobody", "password": "correct horse battery"})
        assert_envoy_status(unary, 503, 14, "UNAVAILABLE")
        stream = client.post("/v1/sessions/x:sendMessage", json={"text": "hi"})
        assert_envoy_status(stream, 503, 14, "UNAVAILABLE")
        health = client.get("/healthz")
        assert_envoy_status(health, 503, 14, "UNAVAILABLE")
