"""Test-side gRPC client helpers: stubs with a bearer token, and rich-error assertions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from parley_proto.v1 import (
    admin_service_pb2_grpc,
    agent_service_pb2,
    agent_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
    branch_service_pb2_grpc,
    chat_service_pb2,
    chat_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    usage_service_pb2_grpc,
)

__all__ = ["Stubs", "UserClient", "error_info", "expect_error", "new_user", "wait_finished"]


class _BearerInterceptor(  # type: ignore[misc]
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamStreamClientInterceptor
):
    def __init__(self, token: Callable[[], str | None]) -> None:
        self._token = token

    def _details(self, details: Any) -> Any:
        token = self._token()
        if token is None:
            return details
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {token}")]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


@dataclass
class Stubs:
    auth: auth_service_pb2_grpc.AuthServiceStub
    agents: agent_service_pb2_grpc.AgentServiceStub
    sessions: session_service_pb2_grpc.SessionServiceStub
    chat: chat_service_pb2_grpc.ChatServiceStub
    branches: branch_service_pb2_grpc.BranchServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    usage: usage_service_pb2_grpc.UsageServiceStub

    @classmethod
    def over(cls, channel: grpc.Channel) -> Stubs:
        return cls(
            auth_service_pb2_grpc.AuthServiceStub(channel),
            agent_service_pb2_grpc.AgentServiceStub(channel),
            session_service_pb2_grpc.SessionServiceStub(channel),
            chat_service_pb2_grpc.ChatServiceStub(channel),
            branch_service_pb2_grpc.BranchServiceStub(channel),
            admin_service_pb2_grpc.AdminServiceStub(channel),
            usage_service_pb2_grpc.UsageServiceStub(channel),
        )


@dataclass
class UserClient:
    """A registered, logged-in user; ``stubs`` send their access token."""

    channel: grpc.Channel
    username: str
    password: str
    access_token: str = ""
    refresh_token: str = ""
    user_name: str = ""
    stubs: Stubs = field(init=False)

    def __post_init__(self) -> None:
        self.stubs = Stubs.over(
            grpc.intercept_channel(self.channel, _BearerInterceptor(lambda: self.access_token))
        )

    def create_agent(self, **fields: Any) -> agent_service_pb2.Agent:
        fields.setdefault("display_name", "Test agent")
        fields.setdefault("instructions", "You are a helpful assistant. Answer briefly.")
        return self.stubs.agents.CreateAgent(
            agent_service_pb2.CreateAgentRequest(agent=agent_service_pb2.Agent(**fields))
        ).agent

    def create_session(self, agent: str | None = None, title: str = "") -> session_service_pb2.Session:
        agent = agent or self.create_agent().name
        return self.stubs.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(
                session=session_service_pb2.Session(agent=agent, title=title)
            )
        ).session

    def send(self, session: str, text: str, **kw: Any) -> list[chat_service_pb2.ChatEvent]:
        return list(
            self.stubs.chat.SendMessage(chat_service_pb2.SendMessageRequest(session=session, text=text, **kw))
        )

    def messages(self, session: str, **kw: Any) -> list[chat_service_pb2.Message]:
        out: list[chat_service_pb2.Message] = []
        token = ""
        while True:
            page = self.stubs.chat.ListMessages(
                chat_service_pb2.ListMessagesRequest(parent=session, page_token=token, **kw)
            )
            out.extend(page.messages)
            token = page.next_page_token
            if not token:
                return out


def new_user(
    channel: grpc.Channel, *, prefix: str = "user", password: str = "correct horse battery"
) -> UserClient:
    """Register a fresh user and log in."""
    stubs = Stubs.over(channel)
    username = f"{prefix}-{uuid.uuid4().hex[:10]}"
    user = stubs.auth.CreateUser(
        auth_service_pb2.CreateUserRequest(username=username, password=password)
    ).user
    tokens = stubs.auth.CreateToken(auth_service_pb2.CreateTokenRequest(username=username, password=password))
    return UserClient(channel, username, password, tokens.access_token, tokens.refresh_token, user.name)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``google.rpc.ErrorInfo`` detail of a failed call, if any."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


class expect_error:
    """``with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"): ...``"""

    def __init__(self, code: grpc.StatusCode, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason
        self.error: grpc.RpcError | None = None

    def __enter__(self) -> expect_error:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert exc is not None, f"expected {self.code.name}, but the call succeeded"
        if not isinstance(exc, grpc.RpcError):
            return False
        self.error = exc
        assert exc.code() == self.code, f"expected {self.code.name}, got {exc.code().name}: {exc.details()}"
        if self.reason is not None:
            info = error_info(exc)
            assert info is not None, "no ErrorInfo in the status details"
            assert info.domain == "parley.dev"
            assert info.reason == self.reason, f"expected reason {self.reason}, got {info.reason}"
        return True


def drain(stream: Iterable[Any]) -> Iterator[Any]:
    yield from stream


def wait_finished(user: UserClient, name: str, timeout: float = 30.0) -> chat_service_pb2.Message:
    """Poll GetMessage until the reply ``name`` is no longer IN_PROGRESS (its run ended)."""
    deadline = time.monotonic() + timeout
    while True:
        message = user.stubs.chat.GetMessage(chat_service_pb2.GetMessageRequest(name=name)).message
        if message.status != chat_service_pb2.Message.STATUS_IN_PROGRESS:
            return message
        assert time.monotonic() < deadline, f"{name} still in progress after {timeout} s"
        time.sleep(0.05)
