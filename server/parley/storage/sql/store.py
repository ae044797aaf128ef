"""Metadata store: users, refresh tokens, agents, sessions and branches in SQL.

Each public method is one transaction. Methods that take ``owner_id`` only ever see that
user's rows, so "someone else's" and "absent" are the same ``None``/``False`` to callers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from parley.domain.errors import AlreadyExists
from parley.domain.models import Agent, Branch, Session, User
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import agents, branches, refresh_tokens, sessions, users

__all__ = ["MetadataStore", "RefreshOutcome"]


class RefreshOutcome(StrEnum):
    """Result of presenting a refresh token."""

    OK = "ok"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    REUSED = "reused"


def _user(row: RowMapping) -> User:
    return User(row["id"], row["username"], row["display_name"], row["create_time"], row["update_time"])


def _agent(row: RowMapping) -> Agent:
    return Agent(
        id=row["id"],
        owner_id=row["owner_id"],
        display_name=row["display_name"],
        instructions=row["instructions"],
        model=row["model"],
        temperature=row["temperature"],
        max_output_tokens=row["max_output_tokens"],
        voice=row["voice"],
        language=row["language"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def _session(row: RowMapping) -> Session:
    return Session(
        row["id"],
        row["owner_id"],
        row["agent_id"],
        row["title"],
        row["active_branch_id"],
        row["create_time"],
        row["update_time"],
    )


def _branch(row: RowMapping) -> Branch:
    return Branch(
        session_id=row["session_id"],
        id=row["id"],
        display_name=row["display_name"],
        head_id=row["head_message_id"],
        fork_point_id=row["fork_message_id"],
        message_count=row["head_depth"] + 1,
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


class MetadataStore:
    """SQL access for everything but message content."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- users ---------------------------------------------------------------------------------

    async def create_user(self, user: User, password_hash: str) -> User:
        """Insert ``user``. Raises ``AlreadyExists`` (USERNAME_TAKEN) for a taken username."""
        try:
            async with self._db.transaction() as s:
                await s.execute(
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
                reason="USERNAME_TAKEN",
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

    # --- refresh tokens ------------------------------------------------------------------------

    async def add_refresh_token(
        self, token_id: str, family_id: str, user_id: str, now: datetime, expire_time: datetime
    ) -> None:
        async with self._db.transaction() as s:
            await s.execute(
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
            row = (
                (
                    await s.execute(
                        select(refresh_tokens).where(
                            refresh_tokens.c.id == token_id, refresh_tokens.c.user_id == user_id
                        )
                    )
                )
                .mappings()
                .first()
            )
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
            exists = (
                await s.execute(
                    select(func.count())
                    .select_from(refresh_tokens)
                    .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.user_id == user_id)
                )
            ).scalar_one()
            if not exists:
                return False
            await s.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoke_time.is_(None))
                .values(revoke_time=now)
            )
        return True

    async def is_family_revoked(self, family_id: str) -> bool:
        async with self._db.transaction() as s:
            n = (
                await s.execute(
                    select(func.count())
                    .select_from(refresh_tokens)
                    .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoke_time.is_not(None))
                )
            ).scalar_one()
        return bool(n)

    # --- agents --------------------------------------------------------------------------------

    async def create_agent(self, agent: Agent) -> Agent:
        async with self._db.transaction() as s:
            await s.execute(insert(agents).values(**_agent_values(agent)))
        return agent

    async def get_agent(self, owner_id: str, agent_id: str) -> Agent | None:
        row = await self._db.first(
            select(agents).where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
        )
        return None if row is None else _agent(row)

    async def list_agents(self, owner_id: str, after: str | None, limit: int) -> Sequence[Agent]:
        """Up to ``limit`` agents, oldest first (ids are UUIDv7), after the id ``after``."""
        q = select(agents).where(agents.c.owner_id == owner_id)
        if after is not None:
            q = q.where(agents.c.id > after)
        rows = await self._db.all(q.order_by(agents.c.id).limit(limit))
        return [_agent(r) for r in rows]

    async def update_agent(
        self, owner_id: str, agent_id: str, changes: Mapping[str, Any], now: datetime
    ) -> Agent | None:
        async with self._db.transaction() as s:
            result = await s.execute(
                update(agents)
                .where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
                .values(**changes, update_time=now)
                .returning(*agents.c)
            )
            row = result.mappings().first()
        return None if row is None else _agent(row)

    async def delete_agent(self, owner_id: str, agent_id: str) -> bool:
        """Delete the agent; its sessions, branches and SQL messages cascade."""
        async with self._db.transaction() as s:
            result = await s.execute(
                delete(agents).where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def session_ids_of_agent(self, agent_id: str) -> list[str]:
        async with self._db.transaction() as s:
            return list(
                (await s.execute(select(sessions.c.id).where(sessions.c.agent_id == agent_id))).scalars()
            )

    # --- sessions ------------------------------------------------------------------------------

    async def create_session(self, session: Session, main: Branch) -> Session:
        """Insert a session together with its first branch, atomically."""
        async with self._db.transaction() as s:
            await s.execute(
                insert(sessions).values(
                    id=session.id,
                    owner_id=session.owner_id,
                    agent_id=session.agent_id,
                    title=session.title,
                    active_branch_id=session.active_branch_id,
                    create_time=session.create_time,
                    update_time=session.update_time,
                )
            )
            await s.execute(insert(branches).values(**_branch_values(main)))
        return session

    async def get_session(self, owner_id: str, session_id: str) -> Session | None:
        row = await self._db.first(
            select(sessions).where(sessions.c.id == session_id, sessions.c.owner_id == owner_id)
        )
        return None if row is None else _session(row)

    async def list_sessions(
        self, owner_id: str, agent_id: str | None, after: str | None, limit: int
    ) -> Sequence[Session]:
        """Up to ``limit`` sessions, newest first, before the id ``after``."""
        q = select(sessions).where(sessions.c.owner_id == owner_id)
        if agent_id is not None:
            q = q.where(sessions.c.agent_id == agent_id)
        if after is not None:
            q = q.where(sessions.c.id < after)
        rows = await self._db.all(q.order_by(sessions.c.id.desc()).limit(limit))
        return [_session(r) for r in rows]

    async def update_session(
        self, owner_id: str, session_id: str, changes: Mapping[str, Any], now: datetime
    ) -> Session | None:
        row = await self._db.first(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.owner_id == owner_id)
            .values(**changes, update_time=now)
            .returning(*sessions.c)
        )
        return None if row is None else _session(row)

    async def delete_session(self, owner_id: str, session_id: str) -> bool:
        async with self._db.transaction() as s:
            result = await s.execute(
                delete(sessions).where(sessions.c.id == session_id, sessions.c.owner_id == owner_id)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # --- branches ------------------------------------------------------------------------------

    async def get_branch(self, session_id: str, branch_id: str) -> Branch | None:
        row = await self._db.first(
            select(branches).where(branches.c.session_id == session_id, branches.c.id == branch_id)
        )
        return None if row is None else _branch(row)

    async def create_branch(self, branch: Branch) -> Branch:
        async with self._db.transaction() as s:
            await s.execute(insert(branches).values(**_branch_values(branch)))
        return branch

    async def list_branches(self, session_id: str, after: str | None, limit: int) -> Sequence[Branch]:
        """Up to ``limit`` branches oldest first (by create time, then id), after the branch ``after``."""
        q = select(branches).where(branches.c.session_id == session_id)
        if after is not None:
            cursor_time = (
                select(branches.c.create_time)
                .where(branches.c.session_id == session_id, branches.c.id == after)
                .scalar_subquery()
            )
            q = q.where(tuple_(branches.c.create_time, branches.c.id) > tuple_(cursor_time, after))
        async with self._db.transaction() as s:
            rows = (
                (await s.execute(q.order_by(branches.c.create_time, branches.c.id).limit(limit)))
                .mappings()
                .all()
            )
        return [_branch(r) for r in rows]

    async def set_active_branch(self, session_id: str, branch_id: str, now: datetime) -> None:
        async with self._db.transaction() as s:
            await s.execute(
                update(sessions)
                .where(sessions.c.id == session_id)
                .values(active_branch_id=branch_id, update_time=now)
            )

    async def delete_branch(self, session_id: str, branch_id: str) -> bool:
        async with self._db.transaction() as s:
            result = await s.execute(
                delete(branches).where(and_(branches.c.session_id == session_id, branches.c.id == branch_id))
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _agent_values(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "owner_id": agent.owner_id,
        "display_name": agent.display_name,
        "instructions": agent.instructions,
        "model": agent.model,
        "temperature": agent.temperature,
        "max_output_tokens": agent.max_output_tokens,
        "voice": agent.voice,
        "language": agent.language,
        "create_time": agent.create_time,
        "update_time": agent.update_time,
    }


def _branch_values(branch: Branch) -> dict[str, Any]:
    return {
        "session_id": branch.session_id,
        "id": branch.id,
        "display_name": branch.display_name,
        "head_message_id": branch.head_id,
        "head_depth": branch.message_count - 1,
        "fork_message_id": branch.fork_point_id,
        "create_time": branch.create_time,
        "update_time": branch.update_time,
    }
