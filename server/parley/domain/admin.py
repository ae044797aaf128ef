"""Running the server: users' roles, access and limits, and the run-time settings (AdminService).

Every method needs an admin (``PermissionDenied``, ADMIN_REQUIRED, otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parley.domain.accounts import Principal, normalize_username
from parley.domain.clock import Clock, utc_now
from parley.domain.errors import InvalidArgument, NotFound
from parley.domain.models import Quota, User, UserRole
from parley.domain.pagination import PageRequest, page_of
from parley.domain.settings import RuntimeSettings, ServerSettings
from parley.storage.sql.users import UserStore

__all__ = ["MAX_QUOTA", "QUOTA_FIELDS", "Admin", "UserChanges", "check_quota"]

QUOTA_FIELDS = (
    "input_tokens_per_day",
    "output_tokens_per_day",
    "audio_seconds_per_day",
    "max_concurrent_replies",
)
#: Largest value of any quota field (a day of a very large model is far below it).
MAX_QUOTA = 10**12


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What an admin changes on a user; ``None`` leaves a field as it is."""

    role: UserRole | None = None
    disabled: bool | None = None
    quota: Quota | None = None


def check_quota(quota: Quota, field: str) -> Quota:
    """``quota``, or ``InvalidArgument`` naming the first field below 0 or above ``MAX_QUOTA``."""
    for name in (
        "input_tokens_per_day",
        "output_tokens_per_day",
        "audio_seconds_per_day",
        "max_concurrent_replies",
    ):
        value = getattr(quota, name)
        if value < 0:
            raise InvalidArgument.field(f"{field}.{name}", "must not be negative (0: the server's default)")
        if value > MAX_QUOTA:
            raise InvalidArgument.field(f"{field}.{name}", f"at most {MAX_QUOTA}")
    return quota


class Admin:
    """List and change users, read and change the run-time settings."""

    def __init__(self, users: UserStore, settings: RuntimeSettings, *, clock: Clock = utc_now) -> None:
        self._users = users
        self._settings = settings
        self._now = clock

    async def list_users(
        self, principal: Principal, username_prefix: str, page: PageRequest
    ) -> tuple[Sequence[User], str]:
        """A page of every user, oldest first, optionally whose username starts with the prefix."""
        principal.require_admin()
        rows = await self._users.list_users(normalize_username(username_prefix), page.after, page.size + 1)
        return page_of(rows, page, lambda user: user.id)

    async def get_user(self, principal: Principal, user_id: str) -> User:
        """Any user; ``NotFound`` if absent."""
        principal.require_admin()
        user = await self._users.get_user(user_id)
        if user is None:
            raise NotFound.resource(f"users/{user_id}")
        return user

    async def update_user(self, principal: Principal, user_id: str, changes: UserChanges) -> User:
        """Apply ``changes``. Raises ``NotFound`` for an absent user, ``InvalidArgument`` for a bad
        quota, ``FailedPrecondition`` (LAST_ADMIN) when no enabled admin would be left."""
        principal.require_admin()
        if changes.quota is not None:
            check_quota(changes.quota, "user.quota")
        user = await self._users.update_user(
            user_id, self._now(), role=changes.role, disabled=changes.disabled, quota=changes.quota
        )
        if user is None:
            raise NotFound.resource(f"users/{user_id}")
        return user

    async def get_settings(self, principal: Principal) -> ServerSettings:
        principal.require_admin()
        return await self._settings.fresh()

    async def update_settings(
        self, principal: Principal, *, allow_registration: bool | None, default_quota: Quota | None
    ) -> ServerSettings:
        """Change the run-time settings (``None``: unchanged); they apply at once."""
        principal.require_admin()
        changes: dict[str, object] = {}
        if allow_registration is not None:
            changes["allow_registration"] = allow_registration
        if default_quota is not None:
            changes["default_quota"] = check_quota(default_quota, "settings.default_quota")
        if not changes:
            return await self._settings.fresh()
        return await self._settings.update(changes)
