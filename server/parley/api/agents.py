"""AgentService servicer."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import grpc
from parley_proto.v1 import agent_service_pb2 as pb
from parley_proto.v1 import agent_service_pb2_grpc

from parley.api.convert import agent_changes, agent_fields, agent_to_proto
from parley.auth.interceptor import current_principal
from parley.domain.agents import MUTABLE_AGENT_FIELDS, Agents
from parley.domain.models import Agent
from parley.domain.names import parse_agent
from parley.domain.pagination import page_request

__all__ = ["AgentServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


#: GetAgent responses kept, one per agent (see ``AgentServicer.GetAgent``).
_CACHED_RESPONSES = 1024


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(self, agents: Agents) -> None:
        self._agents = agents
        self._responses: OrderedDict[str, tuple[Agent, pb.GetAgentResponse]] = OrderedDict()

    async def CreateAgent(self, request: pb.CreateAgentRequest, context: Context) -> pb.CreateAgentResponse:
        agent = await self._agents.create(current_principal().user_id, agent_fields(request.agent))
        return pb.CreateAgentResponse(agent=agent_to_proto(agent))

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        """The agent, read as always (owner checked, through the read cache); its response message
        is built once per agent value and reused while the agent read is equal to it: the
        conversion cost more CPU than the read (bench/, unary phase)."""
        agent = await self._agents.get(current_principal().user_id, parse_agent(request.name))
        cached = self._responses.get(agent.id)
        if cached is not None and cached[0] == agent:
            self._responses.move_to_end(agent.id)
            return cached[1]
        response = pb.GetAgentResponse(agent=agent_to_proto(agent))
        self._responses[agent.id] = (agent, response)
        self._responses.move_to_end(agent.id)
        if len(self._responses) > _CACHED_RESPONSES:
            self._responses.popitem(last=False)
        return response

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Context) -> pb.ListAgentsResponse:
        page = page_request(request.page_size, request.page_token, "agents")
        agents, token = await self._agents.list(current_principal().user_id, page)
        return pb.ListAgentsResponse(agents=[agent_to_proto(a) for a in agents], next_page_token=token)

    async def UpdateAgent(self, request: pb.UpdateAgentRequest, context: Context) -> pb.UpdateAgentResponse:
        agent_id = parse_agent(request.agent.name, "agent.name")
        changes = agent_changes(request.agent, request.update_mask, MUTABLE_AGENT_FIELDS)
        agent = await self._agents.update(current_principal().user_id, agent_id, changes)
        return pb.UpdateAgentResponse(agent=agent_to_proto(agent))

    async def DeleteAgent(self, request: pb.DeleteAgentRequest, context: Context) -> pb.DeleteAgentResponse:
        await self._agents.delete(current_principal().user_id, parse_agent(request.name), force=request.force)
        return pb.DeleteAgentResponse()
