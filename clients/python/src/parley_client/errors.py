"""Exceptions for failed calls: the gRPC status code plus Parley's error details.

Every failure the server reports is a gRPC status with a ``google.rpc.ErrorInfo`` detail (domain
``parley.dev``, an UPPER_SNAKE ``reason`` such as ``RESOURCE_NOT_FOUND`` or ``TOKEN_EXPIRED``, and
string ``metadata``), a ``google.rpc.RequestInfo`` (the request id the server logged) and, for
field errors, a ``google.rpc.BadRequest`` (AIP-193). :func:`error_from_rpc` turns such a status
into a :class:`ParleyError` subclass chosen by the status code, so callers can write
``except NotFoundError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "ERROR_DOMAIN",
    "AlreadyExistsError",
    "CallCancelledError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "ParleyError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "error_from_rpc",
]

#: The ``ErrorInfo.domain`` of every error Parley itself reports.
ERROR_DOMAIN = "parley.dev"

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str


class ParleyError(Exception):
    """A call that failed with a gRPC status.

    Attributes:
        code: the gRPC status code (``grpc.StatusCode.NOT_FOUND`` ...).
        message: the status message, for people.
        reason: ``ErrorInfo.reason`` (``RESOURCE_NOT_FOUND``, ``TOKEN_EXPIRED`` ...); empty if the
            status had no ErrorInfo (e.g. a transport failure).
        domain: ``ErrorInfo.domain``; ``parley.dev`` for Parley's own errors.
        metadata: ``ErrorInfo.metadata`` (e.g. ``{"resource": "agents/…"}``).
        field_violations: the ``BadRequest`` field violations, if any.
        request_id: ``RequestInfo.request_id``: quote it when reporting a problem.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.field_violations = field_violations
        self.request_id = request_id

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, message={self.message!r})"
        )


class CallCancelledError(ParleyError):
    """CANCELLED: the call was cancelled (usually by this client)."""


class InvalidArgumentError(ParleyError):
    """INVALID_ARGUMENT: a bad field, malformed name, unsupported audio, a too-long message."""


class DeadlineExceededError(ParleyError):
    """DEADLINE_EXCEEDED: the call's deadline passed."""


class NotFoundError(ParleyError):
    """NOT_FOUND: absent, or owned by someone else (the server never says which)."""


class AlreadyExistsError(ParleyError):
    """ALREADY_EXISTS: e.g. the username is taken."""


class PermissionDeniedError(ParleyError):
    """PERMISSION_DENIED: e.g. registration is switched off."""


class ResourceExhaustedError(ParleyError):
    """RESOURCE_EXHAUSTED: over a size, rate or quota limit."""


class FailedPreconditionError(ParleyError):
    """FAILED_PRECONDITION: e.g. deleting an agent that still has sessions without ``force``."""


class UnimplementedError(ParleyError):
    """UNIMPLEMENTED: the server does not offer this method (yet)."""


class InternalError(ParleyError):
    """INTERNAL: a server bug; ``request_id`` identifies it in the server's log."""


class UnavailableError(ParleyError):
    """UNAVAILABLE: the server, its database or its model provider cannot be reached; retry later."""


class UnauthenticatedError(ParleyError):
    """UNAUTHENTICATED: a missing, expired, invalid or revoked token (see ``reason``)."""


_BY_CODE: dict[grpc.StatusCode, type[ParleyError]] = {
    grpc.StatusCode.CANCELLED: CallCancelledError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


def error_from_rpc(error: grpc.aio.AioRpcError) -> ParleyError:
    """The :class:`ParleyError` (subclass by status code) for a failed call, with the details of
    its ``grpc-status-details-bin`` trailer (a serialized ``google.rpc.Status``)."""
    code = error.code()
    message = error.details() or ""
    reason = domain = request_id = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    # grpc.aio.Metadata at run time (pairs of key and value); the stubs describe the sync API.
    trailers: Any = error.trailing_metadata()
    for key, value in trailers or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.TypeName() == "google.rpc.ErrorInfo":
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.TypeName() == "google.rpc.BadRequest":
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
            elif detail.TypeName() == "google.rpc.RequestInfo":
                req = error_details_pb2.RequestInfo()
                detail.Unpack(req)
                request_id = req.request_id
    cls = _BY_CODE.get(code, ParleyError)
    return cls(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=tuple(violations),
        request_id=request_id,
    )
