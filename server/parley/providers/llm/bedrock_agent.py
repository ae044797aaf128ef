"""Agents on Amazon Bedrock (``bedrock-agent-runtime`` ``InvokeAgent``, through ``boto3``).

A Parley agent whose model is ``bedrock-agent/{agent_id}/{alias_id}`` answers through that
Bedrock agent: its instructions, knowledge bases, action groups and guardrails are configured
in AWS (the Parley agent's instructions, ``temperature`` and ``max_output_tokens`` are not sent).
Each model step is one ``invoke_agent`` call; the shapes are in
:mod:`parley.providers.llm.bedrock_agent_wire`.

Sessions. Bedrock keeps the agent's conversation in its own session, and Bedrock sessions are
linear while Parley's are trees. The Bedrock ``sessionId`` is derived from (Parley session,
branch, the branch's fork point, agent/alias) (:func:`bedrock_session_id`), so it is stable
along a branch, and every fork, edit (fork + send) and regenerate, which all make a new branch,
gets a new Bedrock session. Only the newest user message is sent (``inputText``) while the
branch continues; on the branch's first exchange with the agent (``Conversation.continues``
False: no reply of this agent with text on the path since the fork point) the new session is
seeded with the path before it (``sessionState.conversationHistory``, as far as the context
window allows). So a reply cut short or failed in Parley may still be whole in Bedrock's
session, and switching an agent between aliases and back on one branch leaves the first
alias's session without the other's turns. With ``PARLEY_BEDROCK_AGENT_MEMORY`` the Parley user
id is the ``memoryId`` (Bedrock's long-term memory across sessions, for agents with memory on).

Tools. A ``returnControl`` event becomes one tool call per invocation input (named after the
function, or after the action group for API schemas), which Parley's tool loop routes to the
Parley agent's tool of that name (a client tool: your app runs it); the next step sends the
outputs as ``returnControlInvocationResults``. The call ids carry Bedrock's ``invocationId``,
so nothing is kept between steps. A returnControl for a name the Parley agent does not offer
(or in a reply of an agent without tools) is ``FailedPrecondition``.

Citations (knowledge bases, ``chunk.attribution.citations``) are kept and sent on the
``StopEvent`` (``citations``); the run stores them on the reply (``Message.citations``).

Usage: InvokeAgent reports no token counts without traces, so input tokens are the prompt
estimate of ``hosted.py`` (of the request's turns) and output tokens the same estimate of the
chunks' text (each ``TextDeltaEvent.tokens``).

Errors (:func:`map_agent_error`): access denied and an unknown agent or alias are
``FailedPrecondition`` naming the agent; the rest as :func:`~parley.providers.llm.bedrock.map_bedrock_error`
(throttling and quotas → ``ResourceExhausted``, 5xx, bad gateway, dependency failures →
``Unavailable``, validation → ``InvalidArgument``). Retries are botocore's ``standard`` mode
before the stream opens, as the Bedrock provider's; credentials the standard AWS chain; the
region ``PARLEY_BEDROCK_REGION``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from parley.domain.errors import FailedPrecondition, ParleyError, Reason, Unavailable
from parley.domain.models import StopReason
from parley.domain.names import new_id
from parley.providers.llm.base import ChatTurn, GenerationRequest, ProviderEvent, StopEvent, UsageEvent
from parley.providers.llm.bedrock import MAX_CONCURRENT_STREAMS, map_bedrock_error
from parley.providers.llm.bedrock_agent_wire import (
    AgentStreamReader,
    bedrock_session_id,
    invoke_arguments,
    parse_agent_model,
)
from parley.providers.llm.hosted import context_window_for, estimate_tokens
from parley.providers.llm.threads import ThreadFeed, pump_event_stream

__all__ = ["BedrockAgentProvider", "map_agent_error"]

#: Error codes (lower-case) that mean the agent cannot be used as configured.
_MISCONFIGURED = {
    "accessdeniedexception": "access to it is denied (check the IAM policy: bedrock:InvokeAgent)",
    "resourcenotfoundexception": "no such agent or alias in this region",
}
_UNAVAILABLE = frozenset({"badgatewayexception", "dependencyfailedexception", "conflictexception"})


def map_agent_error(exc: Exception, agent: str, *, provider: str = "bedrock-agent") -> ParleyError:
    """Translate a botocore exception of ``invoke_agent`` for ``agent`` (``agent_id/alias_id``):
    ``AccessDeniedException`` and ``ResourceNotFoundException`` (HTTP 403/404, or the stream's
    ``accessDeniedException`` / ``resourceNotFoundException`` events) → ``FailedPrecondition``
    naming the agent (``metadata["agent"]``); bad gateway, dependency failure and conflict →
    ``Unavailable`` (PROVIDER_UNAVAILABLE); the rest as ``map_bedrock_error``.
    ``metadata["provider"]`` is set on all."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "")).lower()
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        metadata = {"provider": provider, "agent": agent} | ({"status": str(status)} if status else {})
        if code in _MISCONFIGURED:
            return FailedPrecondition(
                f"the agent's model bedrock-agent/{agent}: {_MISCONFIGURED[code]}", metadata=metadata
            )
        if code in _UNAVAILABLE:
            return Unavailable(
                f"{provider} failed ({code})", reason=Reason.PROVIDER_UNAVAILABLE, metadata=metadata
            )
    return map_bedrock_error(exc, provider=provider)


class BedrockAgentProvider:
    """``LLMProvider`` for Bedrock agents (see the module docstring).

    Args:
        region: the AWS region, e.g. ``us-east-1``.
        memory: send the Parley user id as ``memoryId`` (``PARLEY_BEDROCK_AGENT_MEMORY``).
        max_retries: retries before the stream opens (botocore ``standard`` mode).
        timeout_s: connect and read timeout, seconds.
        context_windows: ``PARLEY_MODEL_CONTEXT_WINDOWS`` (``bedrock-agent/agent/alias`` → tokens;
            8192 otherwise): how much of the path seeds a new Bedrock session.
        client: an existing ``bedrock-agent-runtime`` client (tests: botocore's Stubber).
        endpoint_url: another endpoint (VPC endpoints, tests).
    """

    name = "bedrock-agent"

    def __init__(
        self,
        region: str,
        *,
        memory: bool = False,
        max_retries: int = 2,
        timeout_s: float = 60.0,
        context_windows: Mapping[str, int] | None = None,
        client: Any = None,
        endpoint_url: str | None = None,
    ) -> None:
        self._client = client or boto3.session.Session().client(
            "bedrock-agent-runtime",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": max_retries + 1},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                max_pool_connections=MAX_CONCURRENT_STREAMS,
            ),
        )
        self._memory = memory
        self._context_windows = dict(context_windows or {})
        self._executor = ThreadPoolExecutor(
            max_workers=MAX_CONCURRENT_STREAMS, thread_name_prefix="bedrock-agent"
        )

    def context_window(self, model: str) -> int:
        """From ``PARLEY_MODEL_CONTEXT_WINDOWS``, else 8192 (the agent's model is not known here)."""
        return context_window_for(self.name, model, self._context_windows)

    def supports_tools(self, model: str) -> bool:
        """True: an agent's action groups may return control to Parley's tools."""
        return True

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """An estimate (see ``hosted.py``)."""
        return estimate_tokens(turns)

    def session_id(self, request: GenerationRequest) -> str:
        """The Bedrock ``sessionId`` of ``request``: :func:`bedrock_session_id` of its
        conversation, or a new one (``parley-once-<id>``) for a request without one."""
        if request.conversation is None:
            return f"parley-once-{new_id()}"
        return bedrock_session_id(request.conversation, request.model)

    def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The ``invoke_agent`` arguments of ``request``; ``InvalidArgument`` (UNKNOWN_MODEL)
        for a model that is not ``agent_id/alias_id``."""
        parse_agent_model(request.model)
        conversation = request.conversation
        memory_id = conversation.user_id if self._memory and conversation is not None else None
        return invoke_arguments(request, self.session_id(request), memory_id=memory_id)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Stream one step's reply (see the module docstring); raises what :func:`map_agent_error`
        gives, and ``FailedPrecondition`` for a returnControl the request's tools cannot answer."""
        arguments = self.arguments(request)
        agent = f"{arguments['agentId']}/{arguments['agentAliasId']}"
        reader = AgentStreamReader(arguments["agentId"], frozenset(t.name for t in request.tools))
        feed = ThreadFeed()
        opened: list[Any] = []
        asyncio.get_running_loop().run_in_executor(
            self._executor,
            pump_event_stream,
            lambda: self._client.invoke_agent(**arguments)["completion"],
            feed,
            opened,
        )
        try:
            while True:
                kind, item = await feed.get()
                if kind == "error":
                    raise map_agent_error(item, agent, provider=self.name) from item
                if kind == "end":
                    break
                for event in reader.read(item):
                    yield event
        finally:
            feed.cancel.set()
            for events in opened:  # stop reading now rather than at the next event
                with contextlib.suppress(Exception):
                    events.close()
        yield UsageEvent(estimate_tokens(request.turns), reader.output_tokens)
        yield StopEvent(StopReason.TOOL_USE if reader.calls else StopReason.END_TURN, tuple(reader.citations))

    async def close(self) -> None:
        """Stop the worker threads (streams still open end at their next event)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._client.close()
