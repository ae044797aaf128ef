"""Authentication of calls: every RPC outside ``OPEN_METHODS`` needs a valid access token.

The token comes from ``authorization: Bearer <token>`` metadata (RFC 6750; Envoy forwards the
HTTP ``Authorization`` header as this metadata). The verified caller is available to the
handler through :func:`current_principal`.
"""

from __future__ import annotations

import contextvars
from typing import Any

from parley.domain.accounts import Accounts, Principal
from parley.domain.errors import Reason, Unauthenticated

__all__ = ["OPEN_METHODS", "Authenticator", "current_principal", "principal_var"]

#: Methods callable without a token (docs/api.md). Health and reflection are outside ``parley.v1`` and
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
    """The authenticated caller of the current RPC (set by :class:`Authenticator`)."""
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


class Authenticator:
    """Checks the bearer token of every ``parley.v1`` call outside ``OPEN_METHODS`` and sets
    :func:`current_principal` for the handler. The request handlers
    (``parley.api.interceptors``) call it once per call, before the handler runs."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    def needed(self, method: str) -> bool:
        """Whether ``method`` (``/package.Service/Method``) needs a token."""
        return method.startswith(_PROTECTED_PREFIX) and method not in OPEN_METHODS

    async def authenticate(self, metadata: Any) -> None:
        """Verify the call's token (``Unauthenticated`` otherwise) and set the principal."""
        principal_var.set(await self._accounts.authenticate(_bearer(metadata)))
