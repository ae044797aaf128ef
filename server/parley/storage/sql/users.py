"""Users and their refresh tokens (tables ``users`` and ``refresh_tokens``).

Each public method is one transaction.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import AlreadyExists, Reason
from parley.domain.models import User
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import refresh_tokens, users

__all__ = ["RefreshOutcome", "UserStore"]


class RefreshOutcome(StrEnum):
    """Result of presenting a refresh token."""

    OK = "ok"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    REUSED = "reused"


def _user(row: RowMapping) -> User:
    return User(row["id"], row["username"], row["display_name"], row["create_time"], row["update_time"])


class UserStore:
    """SQL access to users and refresh tokens."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(self, user: User, password_hash: str) -> User:
        """Insert ``user``. Raises ``AlreadyExists`` (USERNAME_TAKEN) for a taken username."""
        try:
            await self._db.execute(
                insert(users).values(
                    id=user.id,
                    username=user.username,
                    password_hash=password_hash,
                    display_name=user.display_name,
                    create_time=user.create_time,
                    update_time=user.update_time,
                )
            )
        except IntegrityError:
            raise AlreadyExists(
                f"username {user.username!r} is taken",
                reason=Reason.USERNAME_TAKEN,
                metadata={"username": user.username},
            ) from None
        return user

    async def get_credentials(self, username: str) -> tuple[User, str] | None:
        """The user named ``username`` (already normalized) and their password hash."""
        row = await self._db.first(select(users).where(users.c.username == username))
        return None if row is None else (_user(row), row["password_hash"])

    async def get_user(self, user_id: str) -> User | None:
        row = await self._db.first(select(users).where(users.c.id == user_id))
        return None if row is None else _user(row)

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
        return True

    async def is_family_revoked(self, family_id: str) -> bool:
        row = await self._db.first(
            select(func.count().label("n"))
            .select_from(refresh_tokens)
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoke_time.is_not(None))
        )
        return bool(row and row["n"])
