"""AgentService servicer."""

from __future__ import annotations

from typing import Any

import grpc
from parley_proto.v1 import agent_service_pb2 as pb
from parley_proto.v1 import agent_service_pb2_grpc

from parley.api.convert import agent_changes, agent_fields, agent_to_proto
from parley.auth.interceptor import current_principal
from parley.domain.agents import MUTABLE_AGENT_FIELDS, Agents
from parley.domain.names import parse_agent
from parley.domain.pagination import page_request

__all__ = ["AgentServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(self, agents: Agents) -> None:
        self._agents = agents

    async def CreateAgent(self, request: pb.CreateAgentRequest, context: Context) -> pb.CreateAgentResponse:
        agent = await self._agents.create(current_principal().user_id, agent_fields(request.agent))
        return pb.CreateAgentResponse(agent=agent_to_proto(agent))

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        agent = await self._agents.get(current_principal().user_id, parse_agent(request.name))
        return pb.GetAgentResponse(agent=agent_to_proto(agent))

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
