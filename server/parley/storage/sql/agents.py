"""Agents (table ``agents``). Methods taking ``owner_id`` only ever see that user's rows, so
"someone else's" and "absent" are the same ``None``/``False`` to callers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping

from parley.domain.models import Agent, McpServerConfig, ToolKind, ToolSpec
from parley.storage.read_cache import ReadCache
from parley.storage.sql.engine import Database
from parley.storage.sql.tables import agents, sessions

__all__ = ["AgentStore", "agent_from_row", "agent_values"]


def agent_from_row(row: RowMapping) -> Agent:
    """An ``Agent`` from a row of ``agents`` (or a mapping with the same keys)."""
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
        tools=tools_from_json(row["tools"]),
        mcp_servers=mcp_servers_from_json(row["mcp_servers"]),
    )


def tools_to_json(tools: Sequence[ToolSpec]) -> str:
    return json.dumps(
        [
            {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
                "kind": t.kind.value,
                "require_approval": t.require_approval,
                "url": t.url,
                "headers": dict(t.headers),
            }
            for t in tools
        ]
    )


def tools_from_json(text: str | None) -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(
            t["name"],
            t.get("description", ""),
            t.get("parameters", {}),
            ToolKind(t["kind"]),
            bool(t.get("require_approval")),
            t.get("url", ""),
            t.get("headers", {}),
        )
        for t in json.loads(text or "[]")
    )


def mcp_servers_to_json(servers: Sequence[McpServerConfig]) -> str:
    return json.dumps(
        [
            {
                "name": m.name,
                "url": m.url,
                "headers": dict(m.headers),
                "allowed_tools": list(m.allowed_tools),
                "require_approval": m.require_approval,
            }
            for m in servers
        ]
    )


def mcp_servers_from_json(text: str | None) -> tuple[McpServerConfig, ...]:
    return tuple(
        McpServerConfig(
            m["name"],
            m["url"],
            m.get("headers", {}),
            tuple(m.get("allowed_tools", ())),
            bool(m.get("require_approval")),
        )
        for m in json.loads(text or "[]")
    )


def agent_values(agent: Agent) -> dict[str, Any]:
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
        "tools": tools_to_json(agent.tools),
        "mcp_servers": mcp_servers_to_json(agent.mcp_servers),
    }


class AgentStore:
    """SQL access to agents; each method is one transaction.

    Args:
        cache: where :meth:`get` results are kept for a few seconds (storage/read_cache.py);
            updates and deletions here invalidate it.
    """

    def __init__(self, db: Database, cache: ReadCache[Agent | None] | None = None) -> None:
        self._db = db
        self._cache = cache

    async def create(self, agent: Agent) -> Agent:
        await self._db.execute(insert(agents).values(**agent_values(agent)))
        return agent

    async def get(self, owner_id: str, agent_id: str) -> Agent | None:
        """The agent if ``owner_id`` owns it (from the cache when it is fresh)."""
        if self._cache is None:
            return await self._read(owner_id, agent_id)
        return await self._cache.get(agent_id, owner_id, lambda: self._read(owner_id, agent_id))

    async def _read(self, owner_id: str, agent_id: str) -> Agent | None:
        row = await self._db.first(
            select(agents).where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
        )
        return None if row is None else agent_from_row(row)

    async def list(self, owner_id: str, after: str | None, limit: int) -> Sequence[Agent]:
        """Up to ``limit`` agents, oldest first (ids are UUIDv7), after the id ``after``."""
        q = select(agents).where(agents.c.owner_id == owner_id)
        if after is not None:
            q = q.where(agents.c.id > after)
        rows = await self._db.all(q.order_by(agents.c.id).limit(limit))
        return [agent_from_row(r) for r in rows]

    async def update(
        self, owner_id: str, agent_id: str, changes: Mapping[str, Any], now: datetime
    ) -> Agent | None:
        values = dict(changes)
        if "tools" in values:
            values["tools"] = tools_to_json(values["tools"])
        if "mcp_servers" in values:
            values["mcp_servers"] = mcp_servers_to_json(values["mcp_servers"])
        row = await self._db.first(
            update(agents)
            .where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
            .values(**values, update_time=now)
            .returning(*agents.c)
        )
        if self._cache is not None:
            await self._cache.changed(agent_id)
        return None if row is None else agent_from_row(row)

    async def delete(self, owner_id: str, agent_id: str) -> bool:
        """Delete the agent; its sessions, branches and message tree rows cascade."""
        result = await self._db.execute(
            delete(agents).where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
        )
        if self._cache is not None:
            await self._cache.changed(agent_id)
        return result > 0

    async def session_ids(self, agent_id: str) -> Sequence[str]:
        """Ids of the agent's sessions."""
        rows = await self._db.all(select(sessions.c.id).where(sessions.c.agent_id == agent_id))
        return [r["id"] for r in rows]
