"""Domain errors: the one vocabulary of failure, mapped to gRPC in one interceptor.

Every error carries a ``reason`` (a :class:`Reason`, sent as ``google.rpc.ErrorInfo.reason``),
a human-readable message, and string metadata. The mapping to gRPC status codes (and, via
Envoy, HTTP codes) follows the table in docs/design.md ("Errors") and AIP-193.

:class:`Reason` mirrors ``enum ErrorReason`` of ``protos/parley/v1/errors.proto`` name for name
(tests/domain/test_errors.py keeps the two equal), so that clients can switch on the enum while
the domain stays free of protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "ParleyError",
    "PermissionDenied",
    "QuotaViolation",
    "Reason",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]


class Reason(StrEnum):
    """Why a call failed: ``google.rpc.ErrorInfo.reason`` (domain ``parley.dev``), one of
    ``parley.v1.ErrorReason``. The value is the name."""

    ABORTED = "ABORTED"
    ACTIVE_BRANCH = "ACTIVE_BRANCH"
    ADMIN_REQUIRED = "ADMIN_REQUIRED"
    AGENT_HAS_SESSIONS = "AGENT_HAS_SESSIONS"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    ARCHIVE_UNAVAILABLE = "ARCHIVE_UNAVAILABLE"
    AUDIO_FRAME_TOO_LARGE = "AUDIO_FRAME_TOO_LARGE"
    AUDIO_TOO_FAST = "AUDIO_TOO_FAST"
    AUDIO_TOO_LARGE = "AUDIO_TOO_LARGE"
    AUDIO_TOO_LONG = "AUDIO_TOO_LONG"
    BRANCH_CONFLICT = "BRANCH_CONFLICT"
    CONTEXT_WINDOW_EXCEEDED = "CONTEXT_WINDOW_EXCEEDED"
    CONVERSE_CONFIG_REQUIRED = "CONVERSE_CONFIG_REQUIRED"
    CORRUPT_AUDIO = "CORRUPT_AUDIO"
    DATABASE_BUSY = "DATABASE_BUSY"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    DUPLICATE_REQUEST_ID = "DUPLICATE_REQUEST_ID"
    EMPTY_AUDIO = "EMPTY_AUDIO"
    EMPTY_MESSAGE = "EMPTY_MESSAGE"
    EMPTY_TRANSCRIPT = "EMPTY_TRANSCRIPT"
    EXPORT_TOO_LARGE = "EXPORT_TOO_LARGE"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    INTERNAL = "INTERNAL"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    INVALID_EXPORT = "INVALID_EXPORT"
    INVALID_FIELD = "INVALID_FIELD"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    INVALID_RESOURCE_NAME = "INVALID_RESOURCE_NAME"
    INVALID_TOKEN = "INVALID_TOKEN"
    LAST_ADMIN = "LAST_ADMIN"
    LAST_BRANCH = "LAST_BRANCH"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    MESSAGE_HAS_NO_TEXT = "MESSAGE_HAS_NO_TEXT"
    MESSAGE_TOO_LONG = "MESSAGE_TOO_LONG"
    MISSING_FIELD = "MISSING_FIELD"
    MISSING_TOKEN = "MISSING_TOKEN"
    MODEL_CANNOT_CALL_TOOLS = "MODEL_CANNOT_CALL_TOOLS"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    NOT_AN_ASSISTANT_MESSAGE = "NOT_AN_ASSISTANT_MESSAGE"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    PROVIDER_REJECTED_INPUT = "PROVIDER_REJECTED_INPUT"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    REDIS_UNAVAILABLE = "REDIS_UNAVAILABLE"
    REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"
    REGISTRATION_DISABLED = "REGISTRATION_DISABLED"
    REPLY_IN_PROGRESS = "REPLY_IN_PROGRESS"
    REPLY_NOT_WAITING = "REPLY_NOT_WAITING"
    REPLY_REQUIRES_ACTION = "REPLY_REQUIRES_ACTION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    RUN_ON_ANOTHER_REPLICA = "RUN_ON_ANOTHER_REPLICA"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    TOO_MANY_CONCURRENT_REPLIES = "TOO_MANY_CONCURRENT_REPLIES"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    UNKNOWN_TOOL_CALL = "UNKNOWN_TOOL_CALL"
    UNSUPPORTED_AUDIO = "UNSUPPORTED_AUDIO"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    USERNAME_TAKEN = "USERNAME_TAKEN"
    USER_DISABLED = "USER_DISABLED"
    WEAK_PASSWORD = "WEAK_PASSWORD"
    WRONG_TOKEN_TYPE = "WRONG_TOKEN_TYPE"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One broken limit (``google.rpc.QuotaFailure.Violation``): whose, and which."""

    subject: str
    description: str


class ParleyError(Exception):
    """Base of all expected failures. Subclasses fix the gRPC code (``code_name``)."""

    code_name = "INTERNAL"
    default_reason = Reason.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        quota_violations: Sequence[QuotaViolation] = (),
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        #: ``google.rpc.QuotaFailure`` violations, and the ``google.rpc.RetryInfo`` delay (s).
        self.quota_violations: tuple[QuotaViolation, ...] = tuple(quota_violations)
        self.retry_after_s = retry_after_s


class InvalidArgument(ParleyError):
    """A request field is malformed, out of range, or refers to unsupported content."""

    code_name = "INVALID_ARGUMENT"
    default_reason = Reason.INVALID_ARGUMENT

    @classmethod
    def field(
        cls, field_name: str, description: str, *, reason: Reason = Reason.INVALID_FIELD
    ) -> InvalidArgument:
        """Build an error about one field; the message names the field."""
        return cls(
            f"{field_name}: {description}",
            reason=reason,
            metadata={"field": field_name},
            violations=[FieldViolation(field_name, description)],
        )


class Unauthenticated(ParleyError):
    """Missing, expired, revoked or otherwise invalid credentials."""

    code_name = "UNAUTHENTICATED"
    default_reason = Reason.UNAUTHENTICATED


class PermissionDenied(ParleyError):
    """The caller is known but the action is switched off for everyone (e.g. registration)."""

    code_name = "PERMISSION_DENIED"
    default_reason = Reason.PERMISSION_DENIED


class NotFound(ParleyError):
    """The resource does not exist *or belongs to another user* (never reveal which)."""

    code_name = "NOT_FOUND"
    default_reason = Reason.NOT_FOUND

    @classmethod
    def resource(cls, name: str) -> NotFound:
        """Error for the resource ``name`` (the name the caller sent, echoed back)."""
        return cls(f"{name} not found", reason=Reason.RESOURCE_NOT_FOUND, metadata={"resource": name})


class AlreadyExists(ParleyError):
    """A unique key (such as a username) is taken."""

    code_name = "ALREADY_EXISTS"
    default_reason = Reason.ALREADY_EXISTS


class FailedPrecondition(ParleyError):
    """The request is valid but the resource's state forbids it (e.g. delete the active branch)."""

    code_name = "FAILED_PRECONDITION"
    default_reason = Reason.FAILED_PRECONDITION


class ResourceExhausted(ParleyError):
    """Over a size, rate or quota limit."""

    code_name = "RESOURCE_EXHAUSTED"
    default_reason = Reason.RESOURCE_EXHAUSTED


class Unavailable(ParleyError):
    """A dependency (model provider, database) cannot be reached; retrying later may work."""

    code_name = "UNAVAILABLE"
    default_reason = Reason.UNAVAILABLE


class Aborted(ParleyError):
    """A concurrency conflict (another writer got there first); retrying the call may work."""

    code_name = "ABORTED"
    default_reason = Reason.ABORTED
