"""The Python SDK (clients/python, package parley_client) against the live server."""

from __future__ import annotations

import asyncio
import time

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2, status_pb2
from parley_client import (
    ERROR_DOMAIN,
    ChatEvent,
    ErrorReason,
    InvalidArgumentError,
    Message,
    NotFoundError,
    ParleyClient,
    ParleyError,
    StopReason,
    Tokens,
    UnauthenticatedError,
    UnimplementedError,
    error_from_rpc,
)

from tests.clients.conftest import PASSWORD, LoggedIn
from tests.conftest import TEST_JWT_SECRET
from tests.support.server import ServerProcess

MISSING_AGENT = "agents/01890a5d-ac96-774b-bcce-b302099a8057"


def expired_copy(access_token: str, *, seconds_ago: int = 120) -> str:
    """The same access token (subject, login family, issuer, audience), expired ``seconds_ago``
    (more than the server's 5 s leeway), signed with the test servers' key."""
    claims = jwt.decode(access_token, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 1000, exp=now - seconds_ago, jti=f"{claims['jti']}-expired")
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")


async def collect(events: object) -> list[ChatEvent]:
    return [event async for event in events]  # type: ignore[attr-defined]


async def test_resources_and_a_streamed_reply(logged_in: LoggedIn) -> None:
    client = logged_in.client
    me = await client.get_current_user()
    assert me.username == logged_in.username

    agent = await client.create_agent("Guide", instructions="You are a concise guide.", temperature=0.2)
    assert agent.name.startswith("agents/")
    assert agent.HasField("temperature")
    assert (await client.get_agent(agent.name)).display_name == "Guide"
    renamed = await client.update_agent(agent.name, display_name="Tour guide")
    assert (renamed.display_name, renamed.instructions) == ("Tour guide", "You are a concise guide.")
    assert [a.name async for a in client.list_agents(page_size=1)] == [agent.name]

    session = await client.create_session(agent.name, title="SDK")
    assert (await client.update_session(session.name, title="SDK test")).title == "SDK test"
    assert [s.name async for s in client.list_sessions(agent=agent.name)] == [session.name]

    events = await collect(client.send_message(session.name, "Hello! Name one colour."))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "message_accepted"
    assert kinds[-2:] == ["usage", "message_completed"]
    assert "text_delta" in kinds
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    deltas = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    reply = events[-1].message_completed.message
    assert reply.text == deltas
    assert reply.status == Message.STATUS_COMPLETE
    assert reply.usage.output_tokens > 0

    history = [m async for m in client.list_messages(session.name, page_size=1)]
    assert [m.role for m in history] == [Message.ROLE_USER, Message.ROLE_ASSISTANT]
    assert (await client.get_message(reply.name)).text == reply.text

    await client.delete_session(session.name)
    await client.delete_agent(agent.name)
    with pytest.raises(NotFoundError):
        await client.get_session(session.name)


async def test_not_found_carries_code_and_error_info(logged_in: LoggedIn) -> None:
    with pytest.raises(NotFoundError) as caught:
        await logged_in.client.get_agent(MISSING_AGENT)
    error = caught.value
    assert isinstance(error, ParleyError)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"
    assert error.domain == ERROR_DOMAIN
    assert error.metadata.get("resource") == MISSING_AGENT
    assert error.request_id
    assert str(error).startswith("NOT_FOUND (RESOURCE_NOT_FOUND): ")


async def test_bad_field_carries_field_violations(logged_in: LoggedIn) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await logged_in.client.create_agent("")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any("display_name" in v.field for v in caught.value.field_violations)


async def test_stream_errors_are_exceptions_too(logged_in: LoggedIn) -> None:
    with pytest.raises(NotFoundError) as caught:
        await collect(logged_in.client.send_message("sessions/01890a5d-ac96-774b-bcce-b302099a8057", "Hi"))
    assert caught.value.reason == "RESOURCE_NOT_FOUND"


async def test_expired_access_token_is_refreshed_once_and_the_call_retried(logged_in: LoggedIn) -> None:
    client = logged_in.client
    assert client.tokens is not None
    old = client.tokens
    client.tokens = Tokens(expired_copy(old.access_token), old.refresh_token)

    me = await client.get_current_user()

    assert me.username == logged_in.username
    assert len(logged_in.saved) == 1  # one new pair, handed to on_tokens
    new = logged_in.saved[0]
    assert new is not None and new == client.tokens
    assert new.refresh_token != old.refresh_token  # rotated
    assert new.expires_in > 0


async def test_concurrent_calls_share_one_refresh(logged_in: LoggedIn) -> None:
    """Refresh tokens are single-use: five calls failing with the same expired token must not
    refresh five times (the second use of a refresh token revokes the whole login)."""
    client = logged_in.client
    assert client.tokens is not None
    client.tokens = Tokens(expired_copy(client.tokens.access_token), client.tokens.refresh_token)

    users = await asyncio.gather(*(client.get_current_user() for _ in range(5)))

    assert {u.username for u in users} == {logged_in.username}
    assert len(logged_in.saved) == 1
    assert (await client.get_current_user()).username == logged_in.username  # the login still works


async def test_streams_refresh_too(logged_in: LoggedIn) -> None:
    client = logged_in.client
    agent = await client.create_agent("Guide")
    session = await client.create_session(agent.name)
    assert client.tokens is not None
    client.tokens = Tokens(expired_copy(client.tokens.access_token), client.tokens.refresh_token)

    events = await collect(client.send_message(session.name, "Hi!"))

    assert events[-1].HasField("message_completed")
    assert len(logged_in.saved) == 1


async def test_a_failed_refresh_is_raised(logged_in: LoggedIn) -> None:
    client = logged_in.client
    assert client.tokens is not None
    client.tokens = Tokens(expired_copy(client.tokens.access_token), "not-a-refresh-token")
    with pytest.raises(UnauthenticatedError):
        await client.get_current_user()
    assert logged_in.saved == []


async def test_other_unauthenticated_errors_are_not_retried(logged_in: LoggedIn) -> None:
    client = logged_in.client
    assert client.tokens is not None
    client.tokens = Tokens("garbage", client.tokens.refresh_token)
    with pytest.raises(UnauthenticatedError) as caught:
        await client.get_current_user()
    assert caught.value.reason == "INVALID_TOKEN"
    assert logged_in.saved == []


async def test_calls_before_login_fail_without_a_round_trip(server: ServerProcess) -> None:
    async with ParleyClient(server.target) as client:
        with pytest.raises(UnauthenticatedError) as caught:
            await client.get_current_user()
    assert caught.value.reason == "NOT_LOGGED_IN"


async def test_logout_revokes_the_login(logged_in: LoggedIn) -> None:
    client = logged_in.client
    assert client.tokens is not None
    tokens = client.tokens
    await client.logout()
    assert client.tokens is None
    assert logged_in.saved == [None]
    client.tokens = tokens
    with pytest.raises(UnauthenticatedError):
        await client.get_current_user()


async def test_register_twice_is_already_exists(server: ServerProcess) -> None:
    async with ParleyClient(server.target) as client:
        username = f"dup-{time.time_ns()}"
        await client.register(username, PASSWORD)
        with pytest.raises(ParleyError) as caught:
            await client.register(username, PASSWORD)
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.reason == "USERNAME_TAKEN"


def test_error_from_rpc_reads_every_detail() -> None:
    status = status_pb2.Status(code=grpc.StatusCode.UNIMPLEMENTED.value[0], message="not built yet")
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="NOT_BUILT", domain=ERROR_DOMAIN, metadata={"method": "X"})
    )
    status.details.add().Pack(
        error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field="a", description="b")]
        )
    )
    status.details.add().Pack(error_details_pb2.RequestInfo(request_id="req-1"))
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details="not built yet",
    )

    error = error_from_rpc(rpc_error)

    assert isinstance(error, UnimplementedError)
    assert (error.reason, error.domain, dict(error.metadata)) == ("NOT_BUILT", ERROR_DOMAIN, {"method": "X"})
    assert [(v.field, v.description) for v in error.field_violations] == [("a", "b")]
    assert error.request_id == "req-1"
    assert error.message == "not built yet"


def test_error_from_rpc_without_details() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="connection refused"
    )
    error = error_from_rpc(rpc_error)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert (error.reason, error.request_id, error.field_violations) == ("", "", ())


async def test_background_replies_are_resumed_and_cancelled(logged_in: LoggedIn) -> None:
    client = logged_in.client
    agent = await client.create_agent(
        "Teller", instructions="Write long, detailed stories.", max_output_tokens=300
    )
    session = await client.create_session(agent.name)
    seen: list[ChatEvent] = []
    async for event in client.send_message(session.name, "A long story.", background=True):
        seen.append(event)
        if len(seen) == 3:
            break  # leaving the iterator closes the call; the background reply goes on
    name = seen[0].message_accepted.assistant_message
    resumed = client.resume_stream(name, starting_after=2)
    first = await anext(resumed)
    assert first.sequence_number == 3 and first == seen[2]
    cancelled = await client.cancel_message(name)
    assert (
        cancelled.status == Message.STATUS_INCOMPLETE
        and cancelled.stop_reason == StopReason.STOP_REASON_CANCELLED
    )
    rest = [event async for event in resumed]
    assert rest[-1].message_completed.message == cancelled
    with pytest.raises(InvalidArgumentError) as bad:
        await client.cancel_message(seen[0].message_accepted.user_message.name)
    assert bad.value.reason == ErrorReason.Name(ErrorReason.NOT_AN_ASSISTANT_MESSAGE)


async def test_usage_and_account_deletion(logged_in: LoggedIn) -> None:
    client = logged_in.client
    agent = await client.create_agent("Counter")
    session = await client.create_session(agent.name)
    await collect(client.send_message(session.name, "Hello"))
    usage = await client.get_usage()
    assert usage.parent.startswith("users/") and usage.message_count >= 2 and usage.output_tokens > 0
    assert (await client.get_usage(session.name)).message_count == 2
    with pytest.raises(UnauthenticatedError) as wrong:
        await client.delete_user(password="not the password")
    assert wrong.value.reason == ErrorReason.Name(ErrorReason.INVALID_CREDENTIALS)
    await client.delete_user(password=PASSWORD)
    assert client.tokens is None
