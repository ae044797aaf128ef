"""Accounts: registration, login, token refresh with reuse detection, logout."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from parley.auth.passwords import Passwords
from parley.auth.tokens import TokenClaims, Tokens
from parley.domain.clock import Clock, utc_now
from parley.domain.errors import InvalidArgument, NotFound, PermissionDenied, Reason, Unauthenticated
from parley.domain.fields import check_display_name
from parley.domain.models import Quota, User, UserRole
from parley.domain.names import new_id
from parley.domain.settings import RuntimeSettings
from parley.storage.sql.users import RefreshOutcome, UserStore

__all__ = ["Accounts", "Principal", "TokenPair", "UserData", "normalize_username"]

_USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{2,31}")
#: NIST SP 800-63B 5.1.1.2: at least 8 characters; accept at least 64. We allow 256.
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


#: A quota of zeros: the server's defaults everywhere.
NO_QUOTA = Quota()


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of an RPC: who, with which role and own quota (read with the
    token's revocation check, one query per call)."""

    user_id: str
    claims: TokenClaims | None = None
    role: UserRole = UserRole.USER
    quota: Quota = NO_QUOTA

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.ADMIN

    def token_claims(self) -> TokenClaims:
        """The claims of the call's access token (every authenticated call has them)."""
        if self.claims is None:
            raise Unauthenticated("authentication required", reason=Reason.MISSING_TOKEN)
        return self.claims

    def require_admin(self) -> None:
        """``PermissionDenied`` (ADMIN_REQUIRED) unless the caller is an admin."""
        if not self.is_admin:
            raise PermissionDenied("this call needs an admin", reason=Reason.ADMIN_REQUIRED)


class UserData(Protocol):
    """What else holds a user's data, told before and after the user's rows are deleted (their
    runs are stopped before; their message content, in the content store, is deleted after)."""

    async def before_delete(self, user_id: str) -> None: ...

    async def after_delete(self, user_id: str) -> None: ...


def normalize_username(username: str) -> str:
    return username.strip().lower()


class Accounts:
    """Users and their logins (the domain side of ``AuthService``)."""

    def __init__(
        self,
        store: UserStore,
        passwords: Passwords,
        tokens: Tokens,
        settings: RuntimeSettings,
        *,
        admin_usernames: Collection[str] = (),
        leaving: UserData | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._tokens = tokens
        self._settings = settings
        self._admins = {normalize_username(name) for name in admin_usernames}
        self._leaving = leaving
        self._now = clock

    async def create_user(self, username: str, password: str, display_name: str) -> User:
        """Register a user.

        Raises ``PermissionDenied`` (REGISTRATION_DISABLED) when registration is off,
        ``InvalidArgument`` for a bad username/password/display name, ``AlreadyExists``
        (USERNAME_TAKEN) for a taken username (compared ignoring case).
        """
        if not (await self._settings.fresh()).allow_registration:
            raise PermissionDenied(
                "registration is disabled on this server", reason=Reason.REGISTRATION_DISABLED
            )
        return await self._register(username, password, display_name)

    async def create_admin(self, username: str, password: str, display_name: str = "") -> User:
        """Register an admin (``parley-server admin create``), whatever the registration switch;
        or make an existing user ``username`` an admin (their password is left as it is)."""
        existing = await self._store.set_role(normalize_username(username), UserRole.ADMIN, self._now())
        if existing is not None:
            return existing
        return await self._register(username, password, display_name, role=UserRole.ADMIN)

    async def _register(
        self, username: str, password: str, display_name: str, *, role: UserRole | None = None
    ) -> User:
        name = normalize_username(username)
        if not _USERNAME_RE.fullmatch(name):
            raise InvalidArgument.field(
                "username", "3 to 32 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
            )
        if len(password) < MIN_PASSWORD_CHARS:
            raise InvalidArgument.field(
                "password", f"at least {MIN_PASSWORD_CHARS} characters", reason=Reason.WEAK_PASSWORD
            )
        if len(password) > MAX_PASSWORD_CHARS:
            raise InvalidArgument.field("password", f"at most {MAX_PASSWORD_CHARS} characters")
        if not password.strip():
            raise InvalidArgument.field(
                "password", "must not be only whitespace", reason=Reason.WEAK_PASSWORD
            )
        if password.strip().lower() == name:
            raise InvalidArgument.field(
                "password", "must differ from the username", reason=Reason.WEAK_PASSWORD
            )
        display = check_display_name(display_name, "display_name") or name
        now = self._now()
        if role is None and name in self._admins:
            role = UserRole.ADMIN
        user = User(new_id(), name, display, now, now, role=role or UserRole.USER)
        # The first user of an empty database runs it (there is no one else to make an admin).
        return await self._store.create_user(
            user, await self._passwords.hash(password), admin_if_first=role is None
        )

    async def create_token(self, username: str, password: str) -> TokenPair:
        """Log in. Raises ``Unauthenticated`` (INVALID_CREDENTIALS) for any wrong username/password."""
        if not username or not password:
            raise InvalidArgument.field(
                "username" if not username else "password", "required", reason=Reason.MISSING_FIELD
            )
        found = await self._store.get_credentials(normalize_username(username))
        ok = await self._passwords.verify(found[1] if found else None, password)
        if not ok or found is None:
            raise Unauthenticated("wrong username or password", reason=Reason.INVALID_CREDENTIALS)
        if found[0].disabled:
            raise Unauthenticated("this user is disabled", reason=Reason.USER_DISABLED)
        return await self._issue_pair(found[0].id, family_id=new_id())

    async def refresh_token(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. A token presented twice revokes its family (REFRESH_TOKEN_REUSED)."""
        if not refresh_token:
            raise InvalidArgument.field("refresh_token", "required", reason=Reason.MISSING_FIELD)
        claims = self._tokens.verify(refresh_token, "refresh")
        outcome = await self._store.use_refresh_token(
            claims.token_id, claims.family_id, claims.user_id, self._now()
        )
        if outcome is RefreshOutcome.REUSED:
            raise Unauthenticated(
                "refresh token already used; its family is revoked", reason=Reason.REFRESH_TOKEN_REUSED
            )
        if outcome is RefreshOutcome.REVOKED:
            raise Unauthenticated("refresh token revoked", reason=Reason.TOKEN_REVOKED)
        if outcome is RefreshOutcome.UNKNOWN:
            raise Unauthenticated("unknown refresh token", reason=Reason.INVALID_TOKEN)
        return await self._issue_pair(claims.user_id, family_id=claims.family_id)

    async def revoke_token(self, principal: Principal, refresh_token: str) -> None:
        """Log out: revoke the refresh token's family (its access tokens stop working too)."""
        if not refresh_token:
            raise InvalidArgument.field("refresh_token", "required", reason=Reason.MISSING_FIELD)
        try:
            claims = self._tokens.verify(refresh_token, "refresh")
        except Unauthenticated as exc:
            if exc.reason != "TOKEN_EXPIRED":
                raise InvalidArgument.field("refresh_token", exc.message, reason=exc.reason) from None
            raise InvalidArgument.field("refresh_token", "expired", reason=Reason.TOKEN_EXPIRED) from None
        if claims.user_id != principal.user_id or not await self._store.revoke_family(
            claims.family_id, principal.user_id, self._now()
        ):
            raise InvalidArgument.field(
                "refresh_token", "not a refresh token of the caller", reason=Reason.INVALID_TOKEN
            )

    async def authenticate(self, access_token: str) -> Principal:
        """Verify an access token, and that its user exists and is enabled and its login was not
        revoked (one query). Raises ``Unauthenticated`` (INVALID_TOKEN, TOKEN_EXPIRED,
        WRONG_TOKEN_TYPE, TOKEN_REVOKED, USER_DISABLED)."""
        claims = self._tokens.verify(access_token, "access")
        caller = await self._store.caller(claims.user_id, claims.family_id)
        if caller is None:
            raise Unauthenticated("the token's user no longer exists", reason=Reason.INVALID_TOKEN)
        if caller.family_revoked:
            raise Unauthenticated("token revoked", reason=Reason.TOKEN_REVOKED)
        if caller.user.disabled:
            raise Unauthenticated("this user is disabled", reason=Reason.USER_DISABLED)
        return Principal(claims.user_id, claims, caller.user.role, caller.user.quota)

    async def current_user(self, principal: Principal) -> User:
        user = await self._store.get_user(principal.user_id)
        if user is None:
            raise Unauthenticated("user no longer exists", reason=Reason.INVALID_TOKEN)
        return user

    async def delete_user(self, principal: Principal, user: str, password: str) -> None:
        """Delete ``user`` (``me``, or a user id for an admin) and everything they own.

        Deleting oneself needs the password again (``Unauthenticated`` INVALID_CREDENTIALS when
        wrong, ``InvalidArgument`` MISSING_FIELD when empty); deleting another user needs an admin
        (``PermissionDenied`` ADMIN_REQUIRED). Raises ``NotFound`` for an absent user and
        ``FailedPrecondition`` (LAST_ADMIN) for the last admin.
        """
        if user in ("me", principal.user_id):
            if not password:
                raise InvalidArgument.field(
                    "password", "required to delete your own account", reason=Reason.MISSING_FIELD
                )
            me = await self._store.get_user(principal.user_id)
            found = await self._store.get_credentials(me.username) if me else None
            if found is None or not await self._passwords.verify(found[1], password):
                raise Unauthenticated("wrong password", reason=Reason.INVALID_CREDENTIALS)
            user_id = principal.user_id
        else:
            principal.require_admin()
            user_id = user
            if await self._store.get_user(user_id) is None:
                raise NotFound.resource(f"users/{user_id}")
        if self._leaving is not None:
            await self._leaving.before_delete(user_id)
        if not await self._store.delete_user(user_id):
            raise NotFound.resource(f"users/{user_id}")
        if self._leaving is not None:
            await self._leaving.after_delete(user_id)

    async def _issue_pair(self, user_id: str, family_id: str) -> TokenPair:
        now = self._now()
        access = self._tokens.issue(user_id, family_id, "access", now)
        refresh = self._tokens.issue(user_id, family_id, "refresh", now)
        await self._store.add_refresh_token(refresh.token_id, family_id, user_id, now, refresh.expire_time)
        return TokenPair(
            self._tokens.encode(access),
            self._tokens.encode(refresh),
            self._tokens.access_ttl,
            self._tokens.refresh_ttl,
        )
