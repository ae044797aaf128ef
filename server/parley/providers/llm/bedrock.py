"""Hosted models on Amazon Bedrock through the ConverseStream API (``boto3``).

boto3 is blocking, so each generation runs ``converse_stream`` and iterates its event stream in
a worker thread that hands events to the event loop through an ``asyncio.Queue`` (as the local
provider does). The request and event shapes, tools included, are in
:mod:`parley.providers.llm.bedrock_wire`: text deltas and tool calls (one ``ToolCallEvent`` per
tool-use block, at its ``contentBlockStop``) are yielded as they come; ``messageStop`` arrives
before ``metadata``, and both are held and sent at the end as UsageEvent then StopEvent, the
order every provider keeps. A step that ends in tool calls (``stopReason`` ``tool_use``) stops
with ``TOOL_USE``; a tool-use block still open at ``messageStop`` (cut by ``max_tokens``) is
not yielded.

Credentials come from the standard AWS chain (environment, shared config/credentials files, SSO,
container or instance roles); only the region is a Parley setting (``PARLEY_BEDROCK_REGION``).

Retries: botocore's ``standard`` retry mode retries the call on throttling, HTTP 5xx and
connection errors before the stream opens, i.e. before the first token or tool call,
``max_retries`` times (so ``max_retries + 1`` attempts), sleeping a random time up to
``2**attempt`` seconds (full jitter, capped at 20 s). Errors inside an open stream are not
retried: they end the reply.

Closing the event stream (client cancel) sets a flag the worker checks between events and closes
the HTTP response, so no more events are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from parley.domain.errors import InvalidArgument, ParleyError, Reason, ResourceExhausted, Unavailable
from parley.domain.models import StopReason
from parley.providers.llm.base import ChatTurn, GenerationRequest, ProviderEvent, StopEvent, UsageEvent
from parley.providers.llm.bedrock_wire import ConverseStreamReader, converse_arguments
from parley.providers.llm.hosted import context_window_for, estimate_tokens
from parley.providers.llm.threads import ThreadFeed, pump_event_stream

__all__ = ["STOP_REASONS", "BedrockProvider", "converse_arguments", "map_bedrock_error"]

log = logging.getLogger(__name__)

#: ConverseStream ``messageStop.stopReason`` → Parley's stop reason.
STOP_REASONS: Mapping[str, StopReason] = {
    "end_turn": StopReason.END_TURN,
    "tool_use": StopReason.TOOL_USE,
    "max_tokens": StopReason.MAX_OUTPUT_TOKENS,
    "model_context_window_exceeded": StopReason.MAX_OUTPUT_TOKENS,
    "stop_sequence": StopReason.STOP_SEQUENCE,
    "guardrail_intervened": StopReason.CONTENT_FILTER,
    "content_filtered": StopReason.CONTENT_FILTER,
}

#: Error codes (compared lower-case: the event stream spells them ``throttlingException``).
_RATE_LIMITED = frozenset(
    {"throttlingexception", "toomanyrequestsexception", "servicequotaexceededexception"}
)
_UNAVAILABLE = frozenset(
    {
        "serviceunavailableexception",
        "internalserverexception",
        "modelnotreadyexception",
        "modeltimeoutexception",
        "modelstreamerrorexception",
    }
)
_REJECTED_INPUT = frozenset({"validationexception"})

#: Concurrent generations (each holds a worker thread while it streams).
MAX_CONCURRENT_STREAMS = 32


def map_bedrock_error(exc: Exception, *, provider: str = "bedrock") -> ParleyError:
    """Translate a botocore exception into Parley's errors (``metadata["provider"]`` set).

    * throttling / quota (HTTP 429) → ``ResourceExhausted`` (PROVIDER_RATE_LIMITED);
    * service unavailable, internal, model not ready/timeout/stream errors, HTTP 5xx, connection
      errors and timeouts → ``Unavailable`` (PROVIDER_UNAVAILABLE);
    * ``ValidationException`` (e.g. input too long for the model) → ``InvalidArgument``
      (PROVIDER_REJECTED_INPUT);
    * anything else (no credentials, access denied, unknown model) → ``Unavailable``
      (PROVIDER_ERROR): a server-side configuration problem, not the caller's fault.
    """
    metadata = {"provider": provider}
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if status:
            metadata["status"] = str(status)
        lowered = code.lower()
        if lowered in _RATE_LIMITED or status == 429:
            return ResourceExhausted(
                f"{provider} rate limit reached; retry later",
                reason=Reason.PROVIDER_RATE_LIMITED,
                metadata=metadata,
            )
        if lowered in _UNAVAILABLE or status >= 500:
            return Unavailable(
                f"{provider} failed ({code})", reason=Reason.PROVIDER_UNAVAILABLE, metadata=metadata
            )
        if lowered in _REJECTED_INPUT:
            return InvalidArgument(
                f"{provider} rejected the input ({code})",
                reason=Reason.PROVIDER_REJECTED_INPUT,
                metadata=metadata,
            )
        return Unavailable(
            f"{provider} refused the request ({code})", reason=Reason.PROVIDER_ERROR, metadata=metadata
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError):  # endpoint unreachable, timeouts, reset
        return Unavailable(
            f"{provider} cannot be reached", reason=Reason.PROVIDER_UNAVAILABLE, metadata=metadata
        )
    if isinstance(exc, NoCredentialsError):
        return Unavailable(
            f"{provider}: no AWS credentials found", reason=Reason.PROVIDER_ERROR, metadata=metadata
        )
    return Unavailable(
        f"{provider} failed: {type(exc).__name__}", reason=Reason.PROVIDER_ERROR, metadata=metadata
    )


class BedrockProvider:
    """``LLMProvider`` for Amazon Bedrock (any model that supports ConverseStream).

    Args:
        region: the AWS region, e.g. ``us-east-1``.
        max_retries: retries before the first token (see the module docstring).
        timeout_s: connect and read timeout, seconds.
        context_windows: ``PARLEY_MODEL_CONTEXT_WINDOWS`` (``bedrock/model`` → tokens).
        client: an existing ``bedrock-runtime`` client (tests: botocore's Stubber).
        endpoint_url: another endpoint (VPC endpoints, tests).
    """

    name = "bedrock"

    def __init__(
        self,
        region: str,
        *,
        max_retries: int = 2,
        timeout_s: float = 60.0,
        context_windows: Mapping[str, int] | None = None,
        client: Any = None,
        endpoint_url: str | None = None,
    ) -> None:
        self._client = client or boto3.session.Session().client(
            "bedrock-runtime",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": max_retries + 1},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                max_pool_connections=MAX_CONCURRENT_STREAMS,
            ),
        )
        self._context_windows = dict(context_windows or {})
        self._executor = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_STREAMS, thread_name_prefix="bedrock")

    def context_window(self, model: str) -> int:
        """From ``PARLEY_MODEL_CONTEXT_WINDOWS``, else the table in ``hosted.py``, else 8192."""
        return context_window_for(self.name, model, self._context_windows)

    def supports_tools(self, model: str) -> bool:
        """True for every model: tools are part of the Converse API. A model that cannot use them
        is refused by Bedrock (``ValidationException``: HTTP 400, ``PROVIDER_REJECTED_INPUT``)."""
        return True

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """An estimate (no tokenizer is known for hosted models; see ``hosted.py``)."""
        return estimate_tokens(turns)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Stream a reply; raises what :func:`map_bedrock_error` gives, or ``Unavailable``
        (PROVIDER_UNAVAILABLE) for a stream that ends without ``messageStop``."""
        feed = ThreadFeed()
        opened: list[Any] = []  # the botocore EventStream, once the call has answered
        arguments = converse_arguments(request)
        asyncio.get_running_loop().run_in_executor(
            self._executor,
            pump_event_stream,
            lambda: self._client.converse_stream(**arguments)["stream"],
            feed,
            opened,
        )
        reader = ConverseStreamReader(STOP_REASONS)
        try:
            while True:
                kind, item = await feed.get()
                if kind == "error":
                    raise map_bedrock_error(item, provider=self.name) from item
                if kind == "end":
                    break
                for event in reader.read(item):
                    yield event
        finally:
            feed.cancel.set()
            for events in opened:  # stop reading now rather than at the next event
                with contextlib.suppress(Exception):
                    events.close()
        stop = reader.stop_reason()
        if stop is None:
            raise Unavailable(
                f"{self.name} ended the stream before the reply was finished",
                reason=Reason.PROVIDER_UNAVAILABLE,
                metadata={"provider": self.name},
            )
        yield UsageEvent(*(reader.usage or (estimate_tokens(request.turns), reader.chunks)))
        yield StopEvent(stop)

    async def close(self) -> None:
        """Stop the worker threads (streams still open end at their next event)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._client.close()
