"""CPU per 1,000 streamed chunks: the openai SDK's own stream vs Parley's OpenAI provider.

    python bench/openai_parse.py                          # in memory, 1 and 16 chunks per read
    python bench/openai_parse.py --per-read 1 4 64
    python bench/openai_parse.py --upstream http://127.0.0.1:8000/v1   # a bench/upstream.py
    python bench/openai_parse.py --upstream http://127.0.0.1:8000/v1 --clients 50 --tokens 200

Both paths send the request through the same ``AsyncOpenAI`` client. *sdk* iterates
``client.chat.completions.create(stream=True)`` and reads each chunk as the provider used to (a
pydantic ``ChatCompletionChunk`` per chunk); *parley* is ``OpenAIChatProvider.stream``
(``providers/llm/openai.py``: its own SSE reading, msgspec, and the chunks of one read merged into
one delta). In memory, the body is the one ``bench/upstream.py`` sends (a role chunk, one chunk per
token, the finish and usage chunks, ``[DONE]``), handed to the client ``--per-read`` events at a
time as if each group had come in one network read: 1 is a client that keeps up with its server,
more is one that falls behind (a saturated process). With ``--upstream``, the replies come over
loopback from a running ``bench/upstream.py`` (start it with a high ``--tokens-per-second``), so
the figures include the HTTP client's own parsing; only this process's CPU is counted.
``--clients N`` streams N replies at once (one ``AsyncOpenAI`` client, as Parley has per
provider), and ``--work-us`` spends that much CPU per delta in the consumer, standing for what
Parley does with each one (run events, a gRPC message): when the process saturates, it reads
several chunks at a time and the merging shows.

Prints, per path and per-read size, CPU milliseconds per 1,000 chunks and the events yielded.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
from openai import AsyncOpenAI
from parley.providers.llm.base import ChatTurn, GenerationRequest, TextDeltaEvent
from parley.providers.llm.openai import OpenAIChatProvider
from parley.providers.llm.openai_wire import ToolCallAssembler

TURNS = [ChatTurn("user", "Say something long.")]


def _events(tokens: int) -> list[bytes]:
    """The SSE events of one reply, as bench/upstream.py writes them."""
    prefix = (
        '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench-model",'
        '"system_fingerprint":null,"choices":'
    )

    def event(choices: str, extra: str = "") -> bytes:
        return f"data: {prefix}{choices}{extra}}}\n\n".encode()

    out = [event('[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]')]
    out += [
        event(f'[{{"index":0,"delta":{{"content":" w{i % 28}"}},"finish_reason":null}}]')
        for i in range(tokens)
    ]
    out.append(event('[{"index":0,"delta":{},"finish_reason":"length"}]'))
    usage = f',"usage":{{"prompt_tokens":5,"completion_tokens":{tokens},"total_tokens":{tokens + 5}}}'
    out.append(event("[]", usage))
    out.append(b"data: [DONE]\n\n")
    return out


class _Body(httpx2.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            await asyncio.sleep(0)  # the next read: the reader waits for the network
            yield piece


def _memory_client(tokens: int, per_read: int) -> AsyncOpenAI:
    events = _events(tokens)
    pieces = [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_Body(pieces))

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    return AsyncOpenAI(api_key="bench", base_url="http://bench.invalid/v1", http_client=http, max_retries=0)


def _arguments(tokens: int) -> dict[str, Any]:
    return {
        "model": "bench-model",
        "messages": [{"role": t.role, "content": t.content} for t in TURNS],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
    }


def _work(seconds: float) -> None:
    """What the consumer does with a delta: ``seconds`` of CPU (``--work-us``)."""
    if seconds:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


async def _sdk(client: AsyncOpenAI, tokens: int, work_s: float) -> int:
    """One reply through the SDK's stream, read as the provider did before it parsed the stream."""
    response = await client.chat.completions.create(**_arguments(tokens))
    events = 0
    assembler = ToolCallAssembler()
    async for chunk in response:
        if chunk.usage is not None:
            _ = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            delta = choice.delta
            if delta is not None and delta.content:
                events += 1
                _ = TextDeltaEvent(delta.content)
                _work(work_s)
            if delta is not None and delta.tool_calls:
                assembler.add(delta.tool_calls)
            _ = choice.finish_reason
    await response.close()
    return events


async def _parley(client: AsyncOpenAI, tokens: int, work_s: float) -> int:
    provider = OpenAIChatProvider("openai", base_url="unused", api_key="unused", client=client)
    events = 0
    async for event in provider.stream(GenerationRequest("bench-model", TURNS, tokens)):
        if isinstance(event, TextDeltaEvent):
            events += 1
            _work(work_s)
    return events


async def _measure(
    run: Callable[[AsyncOpenAI, int], Awaitable[int]],
    client: AsyncOpenAI,
    tokens: int,
    replies: int,
    clients: int = 1,
) -> tuple[float, int]:
    """(CPU ms per 1,000 chunks, deltas per reply) of ``replies`` rounds of ``clients`` replies."""
    await asyncio.gather(*(run(client, tokens) for _ in range(clients)))  # warm up: pools, caches
    events = 0
    start = time.process_time()
    for _ in range(replies):
        events += sum(await asyncio.gather(*(run(client, tokens) for _ in range(clients))))
    cpu = time.process_time() - start
    return cpu * 1000 / (replies * clients * tokens) * 1000, events // (replies * clients)


async def _main(args: argparse.Namespace) -> None:
    work_s = args.work_us / 1e6
    paths = {
        "sdk": functools.partial(_sdk, work_s=work_s),
        "parley": functools.partial(_parley, work_s=work_s),
    }
    rows: list[tuple[str, str, float, int]] = []
    if args.upstream:
        client = AsyncOpenAI(api_key="bench", base_url=args.upstream, max_retries=0)
        for name, run in paths.items():
            per_chunk, events = await _measure(run, client, args.tokens, args.replies, args.clients)
            rows.append((name, f"loopback x{args.clients}", per_chunk, events))
        await client.close()
    else:
        for per_read in args.per_read:
            for name, run in paths.items():
                client = _memory_client(args.tokens, per_read)
                per_chunk, events = await _measure(run, client, args.tokens, args.replies, args.clients)
                rows.append((name, f"{per_read} per read x{args.clients}", per_chunk, events))
                await client.close()
    if args.json:
        print(
            json.dumps(
                [{"path": p, "reads": r, "cpu_ms_per_1000_chunks": c, "deltas": e} for p, r, c, e in rows]
            )
        )
        return
    print(
        f"{args.replies} rounds of {args.clients} replies at once, {args.tokens} chunks each, "
        f"{args.work_us:g} µs of consumer CPU per delta"
    )
    print(f"{'path':<8} {'reads':<20} {'CPU ms / 1,000 chunks':>22} {'deltas / reply':>15}")
    for path, reads, cpu, events in rows:
        print(f"{path:<8} {reads:<20} {cpu:>22.1f} {events:>15}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=1000, help="chunks per reply (default 1000)")
    parser.add_argument("--replies", type=int, default=20, help="rounds per measurement (default 20)")
    parser.add_argument("--clients", type=int, default=1, help="replies streamed at once (default 1)")
    parser.add_argument("--per-read", type=int, nargs="+", default=[1, 16], help="events per read, in memory")
    parser.add_argument("--work-us", type=float, default=0.0, help="consumer CPU per delta, µs (default 0)")
    parser.add_argument("--upstream", help="base URL of a running bench/upstream.py instead of memory")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    asyncio.run(_main(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
