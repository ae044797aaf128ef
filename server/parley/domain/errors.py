"""Domain errors: the one vocabulary of failure, mapped to gRPC in one interceptor.

Every error carries a ``reason`` (UPPER_SNAKE_CASE, the ``google.rpc.ErrorInfo.reason``),
a human-readable message, and string metadata. The mapping to gRPC status codes (and, via
Envoy, HTTP codes) follows the table in DESIGN.md ("Errors") and AIP-193.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "ParleyError",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str


class ParleyError(Exception):
    """Base of all expected failures. Subclasses fix the gRPC code (``code_name``)."""

    code_name = "INTERNAL"
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations: tuple[FieldViolation, ...] = tuple(violations)


class InvalidArgument(ParleyError):
    """A request field is malformed, out of range, or refers to unsupported content."""

    code_name = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field_name: str, description: str, *, reason: str = "INVALID_FIELD") -> InvalidArgument:
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
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ParleyError):
    """The caller is known but the action is switched off for everyone (e.g. registration)."""

    code_name = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class NotFound(ParleyError):
    """The resource does not exist *or belongs to another user* (never reveal which)."""

    code_name = "NOT_FOUND"
    default_reason = "NOT_FOUND"

    @classmethod
    def resource(cls, name: str) -> NotFound:
        """Error for the resource ``name`` (the name the caller sent, echoed back)."""
        return cls(f"{name} not found", reason="RESOURCE_NOT_FOUND", metadata={"resource": name})


class AlreadyExists(ParleyError):
    """A unique key (such as a username) is taken."""

    code_name = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ParleyError):
    """The request is valid but the resource's state forbids it (e.g. delete the active branch)."""

    code_name = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(ParleyError):
    """Over a size, rate or quota limit."""

    code_name = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(ParleyError):
    """A dependency (model provider, database) cannot be reached; retrying later may work."""

    code_name = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


class Aborted(ParleyError):
    """A concurrency conflict (another writer got there first); retrying the call may work."""

    code_name = "ABORTED"
    default_reason = "ABORTED"
