"""Floors: what the libraries under Parley cost alone, on this machine.

    python bench/floors.py grpc-server HOST:PORT --tokens 64 --tokens-per-second 50
    python bench/floors.py sdk-client BASE_URL --clients 50 --seconds 8
    python bench/floors.py grpc-unary-server HOST:PORT --response getagent.bin

``grpc-server`` is a bare ``grpc.aio`` server of ``parley.v1.ChatService/SendMessage`` that
streams what Parley streams for a reply (``message_accepted``, one ``text_delta`` per token at the
upstream's pace, ``message_completed``) and nothing else: no auth, no database, no model call.
The load generator's ``parley-grpc`` client drives it like Parley.

``sdk-client`` streams chat completions from the upstream with ``openai.AsyncOpenAI``, as Parley's
provider does (``stream_options.include_usage``), from ``--clients`` concurrent tasks for
``--seconds``, and prints one JSON object: tokens, tokens/s and its own CPU time per 1000 tokens.

Parley's CPU per token, minus these two, is roughly what Parley's own layers add.

``grpc-unary-server`` is a bare ``grpc.aio`` server of ``parley.v1.AgentService/GetAgent`` that
answers every call with the ``GetAgentResponse`` in ``--response`` (bytes Parley itself returned
for the agent the unary phase reads), parsed once and serialized by grpc on every call as
Parley's are: no auth, no database, no interceptors. ``loadgen unary -kind grpc`` drives it like
Parley (its bearer token is ignored), so Parley's GetAgent requests/s over this floor's is the
share of a bare grpc.aio unary server that Parley keeps.

Each runs on the event loop Parley runs on by default (``--event-loop``, default ``uvloop``, as
``PARLEY_EVENT_LOOP``): a floor is the same libraries on the same loop, minus Parley.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["main"]

T = TypeVar("T")


async def _grpc_server(address: str, tokens: int, rate: float) -> None:
    import grpc
    from parley_proto.v1 import chat_service_pb2 as pb
    from parley_proto.v1 import chat_service_pb2_grpc

    class Chat(chat_service_pb2_grpc.ChatServiceServicer):
        async def SendMessage(self, request: Any, context: Any) -> AsyncIterator[Any]:
            loop = asyncio.get_running_loop()
            start = loop.time()
            yield pb.ChatEvent(sequence_number=1, message_accepted=pb.MessageAccepted())
            for i in range(tokens):
                delay = start + (i + 1) / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                yield pb.ChatEvent(sequence_number=i + 2, text_delta=pb.TextDelta(text=" lorem"))
            yield pb.ChatEvent(sequence_number=tokens + 2, message_completed=pb.MessageCompleted())

    server = grpc.aio.server()
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(Chat(), server)  # type: ignore[abstract]
    server.add_insecure_port(address)
    await server.start()
    print(f"grpc floor serving on {address}", flush=True)
    await server.wait_for_termination()


async def _grpc_unary_server(address: str, response: bytes) -> None:
    import grpc
    from parley_proto.v1 import agent_service_pb2 as pb
    from parley_proto.v1 import agent_service_pb2_grpc

    reply = pb.GetAgentResponse.FromString(response)

    class Agents(agent_service_pb2_grpc.AgentServiceServicer):
        async def GetAgent(self, request: Any, context: Any) -> Any:
            return reply

    server = grpc.aio.server()
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(Agents(), server)  # type: ignore[abstract]
    server.add_insecure_port(address)
    await server.start()
    print(f"grpc unary floor serving on {address} ({len(response)}-byte GetAgentResponse)", flush=True)
    await server.wait_for_termination()


async def _sdk_client(base_url: str, clients: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    tokens = requests = 0
    stop = time.monotonic() + seconds

    async def one() -> None:
        nonlocal tokens, requests
        while time.monotonic() < stop:
            stream = await client.chat.completions.create(
                model="bench-model",
                messages=[{"role": "user", "content": "Hello! What is a good name for a cat?"}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=max_tokens,
            )
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        tokens += 1
            requests += 1

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(clients)))
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    await client.close()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "clients": clients,
        "requests": requests,
        "tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 1),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_1k_tokens": round(cpu * 1e6 / tokens, 1) if tokens else None,
    }


def _runner(event_loop: str) -> Callable[[Coroutine[Any, Any, T]], T]:
    """``asyncio.run`` or ``uvloop.run``."""
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("grpc-server", help="a bare grpc.aio SendMessage streaming server")
    server.add_argument("address", help="loopback HOST:PORT")
    server.add_argument("--tokens", type=int, default=64)
    server.add_argument("--tokens-per-second", type=float, default=50.0)
    unary = sub.add_parser("grpc-unary-server", help="a bare grpc.aio GetAgent server")
    unary.add_argument("address", help="loopback HOST:PORT")
    unary.add_argument("--response", required=True, help="file with a serialized GetAgentResponse")
    client = sub.add_parser("sdk-client", help="AsyncOpenAI streaming alone; prints JSON")
    client.add_argument("base_url", help="the upstream, http://127.0.0.1:PORT/v1")
    client.add_argument("--clients", type=int, default=50)
    client.add_argument("--seconds", type=float, default=8.0)
    client.add_argument("--max-tokens", type=int, default=64)
    for command in (server, unary, client):
        command.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                             help="the event loop (default uvloop: Parley's default)")  # fmt: skip
    args = parser.parse_args(argv)
    run = _runner(args.event_loop)
    if args.command in ("grpc-server", "grpc-unary-server"):
        if not args.address.startswith(("127.", "localhost:", "[::1]:")):
            parser.error(f"{args.command} binds loopback addresses only")
        if args.command == "grpc-server":
            run(_grpc_server(args.address, args.tokens, args.tokens_per_second))
        else:
            with open(args.response, "rb") as f:
                run(_grpc_unary_server(args.address, f.read()))
    else:
        if not args.base_url.startswith(("http://127.", "http://localhost:", "http://[::1]:")):
            parser.error("sdk-client talks to loopback addresses only")
        print(json.dumps(run(_sdk_client(args.base_url, args.clients, args.seconds, args.max_tokens))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
