"""Users and their refresh tokens (tables ``users`` and ``refresh_tokens``).

Each public method is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.domain.errors import AlreadyExists, FailedPrecondition, Reason
from parley.domain.models import Quota, User, UserRole
from parley.storage.read_cache import ReadCache
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import refresh_tokens, users

__all__ = ["Caller", "RefreshOutcome", "UserStore"]


class RefreshOutcome(StrEnum):
    """Result of presenting a refresh token."""

    OK = "ok"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    REUSED = "reused"


def _user(row: RowMapping) -> User:
    return User(
        row["id"],
        row["username"],
        row["display_name"],
        row["create_time"],
        row["update_time"],
        role=UserRole(row["role"]),
        disabled=row["disable_time"] is not None,
        quota=Quota(
            row["input_tokens_per_day"],
            row["output_tokens_per_day"],
            row["audio_seconds_per_day"],
            row["max_concurrent_replies"],
        ),
    )


def _quota_values(quota: Quota) -> dict[str, int]:
    return {
        "input_tokens_per_day": quota.input_tokens_per_day,
        "output_tokens_per_day": quota.output_tokens_per_day,
        "audio_seconds_per_day": quota.audio_seconds_per_day,
        "max_concurrent_replies": quota.max_concurrent_replies,
    }


@dataclass(frozen=True, slots=True)
class Caller:
    """What every authenticated call needs to know of its user: one indexed read per call."""

    user: User
    family_revoked: bool


class UserStore:
    """SQL access to users and refresh tokens.

    Args:
        cache: where :meth:`caller` results are kept for a few seconds; every write here that
            changes a caller (role, disabled, quota, deletion, a revoked login) invalidates it.
    """

    def __init__(self, db: Database, cache: ReadCache[Caller | None] | None = None) -> None:
        self._db = db
        self._cache = cache

    async def _changed(self, user_id: str) -> None:
        if self._cache is not None:
            await self._cache.changed(user_id)

    async def create_user(self, user: User, password_hash: str, *, admin_if_first: bool = False) -> User:
        """Insert ``user``; with ``admin_if_first`` it is an admin when the table was empty (checked
        in the same transaction; PostgreSQL serializes first registrations with an advisory lock).
        Returns the user as stored. Raises ``AlreadyExists`` (USERNAME_TAKEN) for a taken username."""
        role = user.role
        try:
            async with self._db.transaction() as s:
                if admin_if_first and role is not UserRole.ADMIN:
                    if not self._db.is_sqlite:
                        await s.execute(text("SELECT pg_advisory_xact_lock(7243001)"))
                    taken = (await s.execute(select(exists().where(users.c.id.is_not(None))))).scalar()
                    role = UserRole.USER if taken else UserRole.ADMIN
                await s.execute(
                    insert(users).values(
                        id=user.id,
                        username=user.username,
                        password_hash=password_hash,
                        display_name=user.display_name,
                        create_time=user.create_time,
                        update_time=user.update_time,
                        role=role.value,
                        **_quota_values(user.quota),
                    )
                )
        except IntegrityError:
            raise AlreadyExists(
                f"username {user.username!r} is taken",
                reason=Reason.USERNAME_TAKEN,
                metadata={"username": user.username},
            ) from None
        return replace(user, role=role)

    async def get_credentials(self, username: str) -> tuple[User, str] | None:
        """The user named ``username`` (already normalized) and their password hash."""
        row = await self._db.first(select(users).where(users.c.username == username))
        return None if row is None else (_user(row), row["password_hash"])

    async def get_user(self, user_id: str) -> User | None:
        row = await self._db.first(select(users).where(users.c.id == user_id))
        return None if row is None else _user(row)

    async def caller(self, user_id: str, family_id: str) -> Caller | None:
        """The user of a token and whether its login family was revoked, in one query (or from the
        cache: storage/read_cache.py); None if the user no longer exists."""
        if self._cache is None:
            return await self._read_caller(user_id, family_id)
        return await self._cache.get(user_id, family_id, lambda: self._read_caller(user_id, family_id))

    async def _read_caller(self, user_id: str, family_id: str) -> Caller | None:
        revoked = (
            exists()
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoke_time.is_not(None))
            .label("family_revoked")
        )
        row = await self._db.first(select(users, revoked).where(users.c.id == user_id))
        return None if row is None else Caller(_user(row), bool(row["family_revoked"]))

    async def list_users(self, prefix: str, after: str | None, limit: int) -> Sequence[User]:
        """Up to ``limit`` users oldest first (ids are UUIDv7) after the id ``after``, whose username
        starts with ``prefix``."""
        q = select(users)
        if prefix:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(users.c.username.like(f"{escaped}%", escape="\\"))
        if after is not None:
            q = q.where(users.c.id > after)
        rows = await self._db.all(q.order_by(users.c.id).limit(limit))
        return [_user(r) for r in rows]

    async def update_user(
        self,
        user_id: str,
        now: datetime,
        *,
        role: UserRole | None = None,
        disabled: bool | None = None,
        quota: Quota | None = None,
    ) -> User | None:
        """Change a user's role, disabled state or quota in one transaction; None if absent.

        Raises ``FailedPrecondition`` (LAST_ADMIN) when the change would leave no enabled admin
        (the enabled admins are locked first, so two admins demoting each other at once cannot
        both succeed)."""
        values: dict[str, Any] = {"update_time": now}
        if role is not None:
            values["role"] = role.value
        if disabled is not None:
            values["disable_time"] = now if disabled else None
        if quota is not None:
            values.update(_quota_values(quota))
        async with self._db.transaction() as s:
            admins = await _enabled_admins(s)
            loses_admin = role is UserRole.USER or disabled is True
            if loses_admin and admins == [user_id]:
                raise FailedPrecondition(
                    "the server must keep an enabled admin: promote another user first",
                    reason=Reason.LAST_ADMIN,
                )
            row = (
                (
                    await s.execute(
                        update(users).where(users.c.id == user_id).values(**values).returning(*users.c)
                    )
                )
                .mappings()
                .first()
            )
        await self._changed(user_id)
        return None if row is None else _user(row)

    async def delete_user(self, user_id: str) -> bool:
        """Delete a user; their agents, sessions, branches, message tree rows, tokens and usage
        cascade. Raises ``FailedPrecondition`` (LAST_ADMIN) for the last enabled admin."""
        async with self._db.transaction() as s:
            admins = await _enabled_admins(s)
            if admins == [user_id]:
                raise FailedPrecondition(
                    "the last admin cannot be deleted: promote another user first", reason=Reason.LAST_ADMIN
                )
            result = await s.execute(delete(users).where(users.c.id == user_id))
        await self._changed(user_id)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_role(self, username: str, role: UserRole, now: datetime) -> User | None:
        """Give the user named ``username`` (already normalized) ``role``; None if absent."""
        row = await self._db.first(
            update(users)
            .where(users.c.username == username)
            .values(role=role.value, update_time=now)
            .returning(*users.c)
        )
        if row is None:
            return None
        await self._changed(row["id"])
        return _user(row)

    async def add_refresh_token(
        self, token_id: str, family_id: str, user_id: str, now: datetime, expire_time: datetime
    ) -> None:
        await self._db.execute(
            insert(refresh_tokens).values(
                id=token_id,
                family_id=family_id,
                user_id=user_id,
                create_time=now,
                expire_time=expire_time,
            )
        )

    async def use_refresh_token(
        self, token_id: str, family_id: str, user_id: str, now: datetime
    ) -> RefreshOutcome:
        """Mark a refresh token used, once. A second use revokes its whole family (reuse detection)."""
        async with self._db.transaction() as s:
            result = await s.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.id == token_id,
                    refresh_tokens.c.user_id == user_id,
                    refresh_tokens.c.family_id == family_id,
                    refresh_tokens.c.use_time.is_(None),
                    refresh_tokens.c.revoke_time.is_(None),
                )
                .values(use_time=now)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return RefreshOutcome.OK
            found = await s.execute(
                select(refresh_tokens).where(
                    refresh_tokens.c.id == token_id, refresh_tokens.c.user_id == user_id
                )
            )
            row = found.mappings().first()
            if row is None:
                return RefreshOutcome.UNKNOWN
            if row["revoke_time"] is not None:
                return RefreshOutcome.REVOKED
            await s.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.family_id == row["family_id"], refresh_tokens.c.revoke_time.is_(None))
                .values(revoke_time=now)
            )
        await self._changed(user_id)
        return RefreshOutcome.REUSED

    async def revoke_family(self, family_id: str, user_id: str, now: datetime) -> bool:
        """Revoke every token of a family of ``user_id``; False if the family is not theirs."""
        async with self._db.transaction() as s:
            owned = await s.execute(
                select(func.count())
                .select_from(refresh_tokens)
                .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.user_id == user_id)
            )
            if not owned.scalar_one():
                return False
            await s.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoke_time.is_(None))
                .values(revoke_time=now)
            )
        await self._changed(user_id)
        return True


async def _enabled_admins(s: AsyncSession) -> list[str]:
    """Ids of the enabled admins, locked for the transaction (PostgreSQL: FOR UPDATE; SQLite
    serializes writers anyway), so two demotions cannot both pass the last-admin check."""
    query = (
        select(users.c.id)
        .where(users.c.role == UserRole.ADMIN.value, users.c.disable_time.is_(None))
        .with_for_update()
    )
    return list((await s.execute(query)).scalars())
