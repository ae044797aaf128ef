"""Resource names (AIP-122): parse and format ``agents/{agent}``, ``sessions/{s}/messages/{m}`` ...

IDs are UUIDv7 strings, except branch ids, which are ``main`` or UUIDv7. A malformed name is
INVALID_ARGUMENT (reason ``INVALID_RESOURCE_NAME``); a well-formed name of a resource that is
absent or someone else's is NOT_FOUND (decided by the caller, not here).
"""

from __future__ import annotations

import re

import uuid_utils

from parley.domain.errors import InvalidArgument, Reason

__all__ = [
    "agent_name",
    "branch_name",
    "message_name",
    "new_id",
    "parse_agent",
    "parse_branch",
    "parse_message",
    "parse_session",
    "parse_user",
    "session_name",
    "user_name",
]

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_BRANCH = rf"(?:main|{_UUID})"
_AGENT_RE = re.compile(rf"agents/({_UUID})")
_SESSION_RE = re.compile(rf"sessions/({_UUID})")
_MESSAGE_RE = re.compile(rf"sessions/({_UUID})/messages/({_UUID})")
_BRANCH_RE = re.compile(rf"sessions/({_UUID})/branches/({_BRANCH})")
_USER_RE = re.compile(rf"users/(me|{_UUID})")


def new_id() -> str:
    """A new UUIDv7 (RFC 9562): time-ordered, so ids sort by creation time."""
    return str(uuid_utils.uuid7())


def user_name(user_id: str) -> str:
    return f"users/{user_id}"


def agent_name(agent_id: str) -> str:
    return f"agents/{agent_id}"


def session_name(session_id: str) -> str:
    return f"sessions/{session_id}"


def message_name(session_id: str, message_id: str) -> str:
    return f"sessions/{session_id}/messages/{message_id}"


def branch_name(session_id: str, branch_id: str) -> str:
    return f"sessions/{session_id}/branches/{branch_id}"


def _match(pattern: re.Pattern[str], value: str, field: str, form: str) -> re.Match[str]:
    match = pattern.fullmatch(value)
    if match is None:
        if not value:
            raise InvalidArgument.field(field, f"required; expected {form}", reason=Reason.MISSING_FIELD)
        raise InvalidArgument.field(
            field, f"malformed resource name; expected {form}", reason=Reason.INVALID_RESOURCE_NAME
        )
    return match


def parse_agent(value: str, field: str = "name") -> str:
    """``agents/{agent}`` → agent id."""
    return _match(_AGENT_RE, value, field, "agents/{agent}").group(1)


def parse_session(value: str, field: str = "name") -> str:
    """``sessions/{session}`` → session id."""
    return _match(_SESSION_RE, value, field, "sessions/{session}").group(1)


def parse_message(value: str, field: str = "name") -> tuple[str, str]:
    """``sessions/{session}/messages/{message}`` → (session id, message id)."""
    m = _match(_MESSAGE_RE, value, field, "sessions/{session}/messages/{message}")
    return m.group(1), m.group(2)


def parse_branch(value: str, field: str = "branch") -> tuple[str, str]:
    """``sessions/{session}/branches/{branch}`` → (session id, branch id)."""
    m = _match(_BRANCH_RE, value, field, "sessions/{session}/branches/{branch}")
    return m.group(1), m.group(2)


def parse_user(value: str, field: str = "name") -> str:
    """``users/{user}`` → user id, or ``"me"`` for ``users/me``."""
    return _match(_USER_RE, value, field, "users/{user} or users/me").group(1)
