"""JSON logs (``PARLEY_LOG_FORMAT=json``) of a real server: every line one JSON object with the
call's context, and never a password, a token or what was said. Plus the redaction and the
context filter in process."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from parley.api.interceptors import request_id_var
from parley.auth.interceptor import principal_var
from parley.domain.accounts import Principal
from parley.telemetry.logs import ContextFilter, redact
from parley_proto.v1 import auth_service_pb2 as apb
from parley_proto.v1 import chat_service_pb2 as cpb

from tests.support.client import Stubs, UserClient, new_user
from tests.support.server import ServerProcess

PASSWORD = f"log-test password {uuid.uuid4().hex}"
WRONG_PASSWORD = f"not the password {uuid.uuid4().hex}"
SECRET_TEXT = f"my locker code is {uuid.uuid4().hex}"


def _request_id(call: Any) -> str:
    """The request id the server returned (``x-request-id``, initial or trailing metadata)."""
    for key, value in (*(call.initial_metadata() or ()), *(call.trailing_metadata() or ())):
        if key == "x-request-id":
            return str(value)
    raise AssertionError("no x-request-id in the call's metadata")


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


@dataclass
class _Calls:
    """RPCs made, by the request id the server returned: (``Service/Method``, the caller's user
    id, or "" for a call without one), and every secret they carried."""

    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=lambda: [PASSWORD, WRONG_PASSWORD, SECRET_TEXT])

    def ok(self, method: str, caller: str, rpc: Any, request: Any, token: str = "") -> Any:
        response, call = rpc.with_call(request, metadata=_bearer(token))
        self.seen[_request_id(call)] = (method, caller)
        for name in ("access_token", "refresh_token"):
            if value := getattr(response, name, ""):
                self.secrets.append(value)
        return response

    def fails(self, method: str, caller: str, rpc: Any, request: Any, token: str = "") -> None:
        with pytest.raises(grpc.RpcError) as caught:
            rpc(request, metadata=_bearer(token))
        self.seen[_request_id(caught.value)] = (method, caller)


def _account_calls(channel: grpc.Channel, calls: _Calls) -> None:
    """Every AuthService RPC, right and wrong, and a send of SECRET_TEXT."""
    new_user(channel, prefix="logs-first")  # the first user is an admin, who could not leave alone
    auth = Stubs.over(channel).auth
    username = f"logs-{uuid.uuid4().hex[:10]}"
    register = apb.CreateUserRequest(username=username, password=PASSWORD)
    created = calls.ok("AuthService/CreateUser", "", auth.CreateUser, register)
    me = created.user.name.removeprefix("users/")
    wrong = apb.CreateTokenRequest(username=username, password=WRONG_PASSWORD)
    calls.fails("AuthService/CreateToken", "", auth.CreateToken, wrong)
    login = apb.CreateTokenRequest(username=username, password=PASSWORD)
    first = calls.ok("AuthService/CreateToken", "", auth.CreateToken, login)
    refresh = apb.RefreshTokenRequest(refresh_token=first.refresh_token)
    refreshed = calls.ok("AuthService/RefreshToken", "", auth.RefreshToken, refresh)
    # Failures that carry a token: a refresh token used again (which revokes its family), and a
    # refresh token sent as an access token.
    calls.fails("AuthService/RefreshToken", "", auth.RefreshToken, refresh)
    whoami = apb.GetCurrentUserRequest()
    calls.fails("AuthService/GetCurrentUser", "", auth.GetCurrentUser, whoami, refreshed.refresh_token)
    again = calls.ok("AuthService/CreateToken", "", auth.CreateToken, login)
    calls.ok("AuthService/GetCurrentUser", me, auth.GetCurrentUser, whoami, again.access_token)
    token = apb.GetCurrentTokenRequest()
    calls.ok("AuthService/GetCurrentToken", me, auth.GetCurrentToken, token, again.access_token)
    user = UserClient(channel, username, PASSWORD, again.access_token, again.refresh_token, created.user.name)
    session = user.create_session()
    stream = user.stubs.chat.SendMessage(cpb.SendMessageRequest(session=session.name, text=SECRET_TEXT))
    assert list(stream)[-1].WhichOneof("event") == "message_completed"
    calls.seen[_request_id(stream)] = ("ChatService/SendMessage", me)
    missing = cpb.GetMessageRequest(name=f"{session.name}/messages/{uuid.uuid4()}")
    calls.fails("ChatService/GetMessage", me, user.stubs.chat.GetMessage, missing)
    revoke = apb.RevokeTokenRequest(refresh_token=again.refresh_token)
    calls.ok("AuthService/RevokeToken", me, auth.RevokeToken, revoke, again.access_token)
    last = calls.ok("AuthService/CreateToken", "", auth.CreateToken, login)
    wrong_delete = apb.DeleteUserRequest(name="users/me", password=WRONG_PASSWORD)
    calls.fails("AuthService/DeleteUser", me, auth.DeleteUser, wrong_delete, last.access_token)
    delete = apb.DeleteUserRequest(name="users/me", password=PASSWORD)
    calls.ok("AuthService/DeleteUser", me, auth.DeleteUser, delete, last.access_token)


def _records(server: ServerProcess, request_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The server's log as JSON objects, once it has the access line of every call."""
    wanted = list(request_ids)
    deadline = time.monotonic() + 30
    while True:
        text = server.log()
        if all(request_id in text for request_id in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line!r}")
    return records


def test_every_line_is_json_with_the_call_context_and_no_secret(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(log_format="json")
    calls = _Calls()
    with grpc.insecure_channel(server.target) as channel:
        _account_calls(channel, calls)
    records = _records(server, calls.seen)
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        stamp = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert record["time"].endswith("Z") and stamp.utcoffset() == timedelta(0)
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    access = {r["request_id"]: r for r in records if r["logger"] == "parley.access" and "request_id" in r}
    for request_id, (method, caller) in calls.seen.items():
        line = access.get(request_id)
        assert line is not None, f"no access line for {method} {request_id}"
        assert line["message"].startswith(f"/parley.v1.{method} "), line
        assert line.get("user_id", "") == caller, line
    log = server.log()
    assert len(calls.secrets) == 3 + 2 * 4  # the passwords, the text, four logins' tokens
    for secret in calls.secrets:
        assert secret not in log


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("parley.test", logging.INFO, __file__, 1, message, args, None)


def test_redact_masks_tokens_credentials_and_keys() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLWJ5dGVz"
    assert jwt not in redact(f"token {jwt} refused")
    assert redact("authorization: Bearer abc.def-ghi") == "authorization: Bearer [redacted]"
    assert redact("postgresql+asyncpg://parley:hunter22@db:5432/parley") == (
        "postgresql+asyncpg://[redacted]@db:5432/parley"
    )
    assert redact("POST https://tools.example/weather?appid=123&city=Oslo failed") == (
        "POST https://tools.example/weather?[redacted] failed"
    )
    assert redact("key sk-proj-abcdefghijklmnopqrstuvwx") == "key sk-[redacted]"
    plain = "/parley.v1.ChatService/SendMessage OK 12.3ms request_id=0193 user=0194"
    assert redact(plain) == plain


def test_the_context_filter_adds_the_call_and_redacts() -> None:
    context_filter = ContextFilter()
    outside = _record("serving on %s", "127.0.0.1:1")
    assert context_filter.filter(outside)
    assert outside.getMessage() == "serving on 127.0.0.1:1"
    assert not hasattr(outside, "request_id") and not hasattr(outside, "user_id")
    request_token = request_id_var.set("req-1")
    principal_token = principal_var.set(Principal("user-1"))
    try:
        inside = _record("refused %s", "Bearer abc")
        assert context_filter.filter(inside)
    finally:
        principal_var.reset(principal_token)
        request_id_var.reset(request_token)
    assert inside.getMessage() == "refused Bearer [redacted]"
    assert (inside.request_id, inside.user_id) == ("req-1", "user-1")  # type: ignore[attr-defined]


def test_the_trace_of_the_current_span_is_added() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    context = trace.SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    record = _record("in a span")
    with trace.use_span(trace.NonRecordingSpan(context)):
        ContextFilter().filter(record)
    assert record.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[attr-defined]
    assert record.span_id == "00f067aa0ba902b7"  # type: ignore[attr-defined]
    outside = _record("no span")
    ContextFilter().filter(outside)
    assert not hasattr(outside, "trace_id")
