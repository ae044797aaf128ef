"""Agents: validation rules and owner-scoped CRUD."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Reason
from parley.domain.fields import check_display_name
from parley.domain.models import Agent, McpServerConfig, ToolSpec
from parley.domain.names import agent_name, new_id
from parley.domain.pagination import PageRequest, page_of
from parley.domain.tool_rules import check_mcp_servers, check_tools
from parley.providers.llm.registry import ModelRegistry
from parley.runs.manager import RunManager
from parley.storage.messages import MessageStore
from parley.storage.sql.agents import AgentStore

__all__ = ["MUTABLE_AGENT_FIELDS", "AgentFields", "Agents"]

#: Longest system prompt, in characters (a generous bound for a 128k-token context model).
MAX_INSTRUCTIONS_CHARS = 32_768
MAX_OUTPUT_TOKENS = 32_768
#: OpenAI's documented temperature range.
TEMPERATURE_RANGE = (0.0, 2.0)
LANGUAGES = ("", "en", "ar")
MUTABLE_AGENT_FIELDS = (
    "display_name",
    "instructions",
    "model",
    "temperature",
    "max_output_tokens",
    "voice",
    "language",
    "tools",
    "mcp_servers",
)


@dataclass(frozen=True, slots=True)
class AgentFields:
    """Caller-settable fields of an agent."""

    display_name: str
    instructions: str = ""
    model: str = ""
    temperature: float | None = None
    max_output_tokens: int = 0
    voice: str = ""
    language: str = ""
    tools: tuple[ToolSpec, ...] = ()
    mcp_servers: tuple[McpServerConfig, ...] = ()


class Agents:
    """Create, read, update and delete the caller's agents."""

    def __init__(
        self,
        store: AgentStore,
        messages: MessageStore,
        runs: RunManager,
        models: ModelRegistry,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._messages = messages
        self._runs = runs
        self._models = models
        self._now = clock

    def _validate(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(changes)
        if "display_name" in out:
            out["display_name"] = check_display_name(
                str(out["display_name"]), "agent.display_name", required=True
            )
        if "instructions" in out and len(out["instructions"]) > MAX_INSTRUCTIONS_CHARS:
            raise InvalidArgument.field("agent.instructions", f"at most {MAX_INSTRUCTIONS_CHARS} characters")
        if "model" in out:
            out["model"] = out["model"].strip()
            if out["model"]:
                self._models.resolve(out["model"], field="agent.model")
        temperature = out.get("temperature")
        if temperature is not None and not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1]:
            raise InvalidArgument.field("agent.temperature", "must be between 0 and 2")
        if "max_output_tokens" in out and not 0 <= out["max_output_tokens"] <= MAX_OUTPUT_TOKENS:
            raise InvalidArgument.field(
                "agent.max_output_tokens", f"must be between 0 and {MAX_OUTPUT_TOKENS}"
            )
        if "voice" in out and len(out["voice"]) > 100:
            raise InvalidArgument.field("agent.voice", "at most 100 characters")
        if "language" in out:
            out["language"] = "" if out["language"] in ("auto",) else out["language"]
            if out["language"] not in LANGUAGES:
                raise InvalidArgument.field(
                    "agent.language",
                    "must be 'en', 'ar', or empty for automatic",
                    reason=Reason.UNSUPPORTED_LANGUAGE,
                )
        if "tools" in out:
            out["tools"] = check_tools(out["tools"])
        if "mcp_servers" in out:
            out["mcp_servers"] = check_mcp_servers(out["mcp_servers"], out.get("tools", ()))
        return out

    def _check_model_tools(self, agent: Agent) -> None:
        """An agent with tools needs a model that can call them (MODEL_CANNOT_CALL_TOOLS)."""
        if not agent.tools and not agent.mcp_servers:
            return
        resolved = self._models.resolve(agent.model, field="agent.model")
        if not resolved.provider.supports_tools(resolved.model):
            raise InvalidArgument.field(
                "agent.tools",
                f"model {resolved.qualified_name} cannot call tools; give the agent a model that can "
                "(an OpenAI-compatible or Bedrock model) or remove its tools",
                reason=Reason.MODEL_CANNOT_CALL_TOOLS,
            )

    async def create(self, owner_id: str, fields: AgentFields) -> Agent:
        """Create an agent owned by ``owner_id``; raises ``InvalidArgument`` for bad fields."""
        v = self._validate({name: getattr(fields, name) for name in MUTABLE_AGENT_FIELDS})
        now = self._now()
        agent = Agent(id=new_id(), owner_id=owner_id, create_time=now, update_time=now, **v)
        self._check_model_tools(agent)
        return await self._store.create(agent)

    async def get(self, owner_id: str, agent_id: str) -> Agent:
        """The agent; ``NotFound`` if absent or another user's."""
        agent = await self._store.get(owner_id, agent_id)
        if agent is None:
            raise NotFound.resource(agent_name(agent_id))
        return agent

    async def list(self, owner_id: str, page: PageRequest) -> tuple[Sequence[Agent], str]:
        """A page of the owner's agents (oldest first) and the next page token."""
        rows = await self._store.list(owner_id, page.after, page.size + 1)
        return page_of(rows, page, lambda agent: agent.id)

    async def update(self, owner_id: str, agent_id: str, changes: Mapping[str, Any]) -> Agent:
        """Apply ``changes`` (keys from ``MUTABLE_AGENT_FIELDS``)."""
        unknown = set(changes) - set(MUTABLE_AGENT_FIELDS)
        if unknown:
            raise InvalidArgument.field("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        v = self._validate(changes)
        if not v:
            return await self.get(owner_id, agent_id)
        if {"tools", "mcp_servers", "model"} & set(v):
            current = await self.get(owner_id, agent_id)
            if "tools" in v and "mcp_servers" not in v:
                check_mcp_servers(current.mcp_servers, v["tools"])
            self._check_model_tools(replace(current, **v))
        agent = await self._store.update(owner_id, agent_id, v, self._now())
        if agent is None:
            raise NotFound.resource(agent_name(agent_id))
        return agent

    async def delete(self, owner_id: str, agent_id: str, *, force: bool) -> None:
        """Delete an agent; with sessions, only when ``force`` (then they go too)."""
        await self.get(owner_id, agent_id)
        session_ids = await self._store.session_ids(agent_id)
        if session_ids and not force:
            raise FailedPrecondition(
                f"{agent_name(agent_id)} has {len(session_ids)} session(s); set force to delete them too",
                reason=Reason.AGENT_HAS_SESSIONS,
            )
        if not await self._store.delete(owner_id, agent_id):
            raise NotFound.resource(agent_name(agent_id))
        # Metadata first: once it is gone nothing can reach the content, so a failure here leaves
        # unreachable rows at worst, never a session without its messages.
        for session_id in session_ids:
            await self._runs.cancel_session(session_id)
            await self._messages.delete_session_content(session_id)
