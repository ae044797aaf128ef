"""JWT access and refresh tokens (PyJWT).

Access tokens live ``access_token_ttl_seconds`` (15 min), refresh tokens
``refresh_token_ttl_seconds`` (30 days). Both are signed with the configured HMAC algorithm;
verification accepts only that algorithm (RFC 8725 section 3.1: an explicit allow-list, so
``alg: none`` and algorithm confusion are refused) and requires ``exp``, ``iat``, ``iss``,
``aud``, ``sub``, ``jti``, ``fam`` and the right ``typ`` (RFC 8725 section 3.11: explicit
typing, so a refresh token is never accepted as an access token, nor the reverse).

Verified tokens are remembered (the exact token string, at most ``VERIFIED_CACHE_SIZE`` of them)
until they expire, so a client's every call does not pay for the HMAC and the JSON parse again;
expiry is still checked on every call. Revocation is not a property of the token: the caller's
login family is checked on every call (``UserStore.caller``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt

from parley.config import Settings
from parley.domain.errors import Reason, Unauthenticated
from parley.domain.names import new_id

__all__ = ["TokenClaims", "Tokens"]

TokenType = Literal["access", "refresh"]
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti"]
#: Seconds of clock skew allowed on ``exp`` and ``iat``.
LEEWAY_S = 5
#: Verified tokens remembered (least recently used dropped first).
VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """Verified claims. ``family_id`` ties access and refresh tokens of one login together."""

    user_id: str
    token_id: str
    family_id: str
    token_type: TokenType
    issue_time: datetime
    expire_time: datetime
    issuer: str
    audience: str


class Tokens:
    """Issues and verifies Parley JWTs.

    ``key`` is the HMAC key: ``PARLEY_JWT_SECRET`` when set, else the install secret
    (``parley.auth.secret.install_secret``). Algorithm, issuer, audience and lifetimes come from
    ``settings``.
    """

    def __init__(self, settings: Settings, key: str) -> None:
        self._key = key
        self._alg = settings.jwt_algorithm
        self._iss = settings.jwt_issuer
        self._aud = settings.jwt_audience
        self.access_ttl = settings.access_token_ttl_seconds
        self.refresh_ttl = settings.refresh_token_ttl_seconds
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()

    def issue(self, user_id: str, family_id: str, token_type: TokenType, now: datetime) -> TokenClaims:
        """Claims of a new token (encode them with :meth:`encode`)."""
        ttl = self.access_ttl if token_type == "access" else self.refresh_ttl
        return TokenClaims(
            user_id, new_id(), family_id, token_type, now, now + timedelta(seconds=ttl), self._iss, self._aud
        )

    def encode(self, claims: TokenClaims) -> str:
        payload = {
            "sub": claims.user_id,
            "jti": claims.token_id,
            "fam": claims.family_id,
            "typ": claims.token_type,
            "iat": int(claims.issue_time.timestamp()),
            "exp": int(claims.expire_time.timestamp()),
            "iss": claims.issuer,
            "aud": claims.audience,
        }
        return jwt.encode(payload, self._key, algorithm=self._alg, headers={"typ": "JWT"})

    def verify(self, token: str, expected: TokenType) -> TokenClaims:
        """Verify signature, algorithm, expiry, issuer, audience and type.

        Raises ``Unauthenticated`` with reason ``TOKEN_EXPIRED``, ``WRONG_TOKEN_TYPE`` or
        ``INVALID_TOKEN``.
        """
        known = self._verified.get(token)
        if known is not None:
            if time.time() > known.expire_time.timestamp() + LEEWAY_S:
                del self._verified[token]
                raise Unauthenticated("token expired", reason=Reason.TOKEN_EXPIRED)
            if known.token_type != expected:
                raise Unauthenticated(f"expected an {expected} token", reason=Reason.WRONG_TOKEN_TYPE)
            self._verified.move_to_end(token)
            return known
        claims = self._decode(token, expected)
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str, expected: TokenType) -> TokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self._alg],
                audience=self._aud,
                issuer=self._iss,
                options={"require": _REQUIRED},
                leeway=LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", reason=Reason.TOKEN_EXPIRED) from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}", reason=Reason.INVALID_TOKEN) from None
        if payload.get("typ") != expected:
            raise Unauthenticated(f"expected an {expected} token", reason=Reason.WRONG_TOKEN_TYPE)
        try:
            return TokenClaims(
                user_id=str(payload["sub"]),
                token_id=str(payload["jti"]),
                family_id=str(payload["fam"]),
                token_type=expected,
                issue_time=datetime.fromtimestamp(payload["iat"], UTC),
                expire_time=datetime.fromtimestamp(payload["exp"], UTC),
                issuer=self._iss,
                audience=self._aud,
            )
        except (KeyError, TypeError, ValueError):
            raise Unauthenticated("invalid token claims", reason=Reason.INVALID_TOKEN) from None
