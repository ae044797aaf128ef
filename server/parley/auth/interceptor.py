"""The auth interceptor: every RPC outside ``OPEN_METHODS`` needs a valid access token.

The token comes from ``authorization: Bearer <token>`` metadata (RFC 6750; Envoy forwards the
HTTP ``Authorization`` header as this metadata). The verified caller is available to the
handler through :func:`current_principal`.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from parley.domain.accounts import Accounts, Principal
from parley.domain.errors import Reason, Unauthenticated

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

__all__ = ["OPEN_METHODS", "AuthInterceptor", "current_principal", "principal_var"]

#: Methods callable without a token (API.md). Health and reflection are outside ``parley.v1`` and
#: are never checked.
OPEN_METHODS = frozenset(
    {
        "/parley.v1.AuthService/CreateUser",
        "/parley.v1.AuthService/CreateToken",
        "/parley.v1.AuthService/RefreshToken",
    }
)
_PROTECTED_PREFIX = "/parley.v1."

principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    """The authenticated caller of the current RPC (set by :class:`AuthInterceptor`)."""
    principal = principal_var.get()
    if principal is None:  # only reachable if a protected method was registered without the interceptor
        raise Unauthenticated("authentication required", reason=Reason.MISSING_TOKEN)
    return principal


def _bearer(metadata: Any) -> str:
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        raise Unauthenticated(
            "missing authorization metadata: send 'authorization: Bearer <access token>'",
            reason=Reason.MISSING_TOKEN,
        )
    scheme, _, token = str(values[0]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <access token>'", reason=Reason.INVALID_TOKEN)
    return token.strip()


class AuthInterceptor(_ServerInterceptor):
    """Authenticates ``parley.v1`` calls before the handler runs."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_PROTECTED_PREFIX) or method in OPEN_METHODS:
            return handler
        accounts = self._accounts

        async def authenticate(context: Any) -> None:
            principal = await accounts.authenticate(_bearer(context.invocation_metadata()))
            principal_var.set(principal)

        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                await authenticate(context)
                return await inner_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await authenticate(context)
                async for response in inner_stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
