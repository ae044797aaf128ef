"""Prometheus metrics of a real server, scraped from its ``/metrics`` endpoint and parsed with
prometheus-client's parser: each send moves exactly the counters and histograms it should.

The model is the scripted OpenAI-compatible stand-in (``tests/support/openai_standin.py``), so
the usage of every reply is exact; speech is real (Whisper base in, espeak-ng out).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from parley_proto.v1 import agent_service_pb2 as apb
from parley_proto.v1 import chat_service_pb2 as pb

from tests.audio.audio_samples import espeak_wav
from tests.support.client import UserClient, expect_error
from tests.support.prometheus import Samples, scrape, value, wait_for_metrics
from tests.support.server import ServerProcess

MODEL = "standin/hello"  # "Hello there." in three chunks, usage (20, 3)
CHAT = "parley.v1.ChatService"


def _runs(samples: Samples, status: str, stop_reason: str) -> float:
    return value(samples, "parley_runs_finished_total", status=status, stop_reason=stop_reason)


def _handled(samples: Samples, service: str, method: str, code: str, kind: str) -> float:
    return value(
        samples,
        "grpc_server_handled_total",
        grpc_type=kind,
        grpc_service=service,
        grpc_method=method,
        grpc_code=code,
    )


def _tokens(samples: Samples, model: str) -> tuple[float, float]:
    provider, _, name = model.partition("/")
    return (
        value(samples, "parley_input_tokens_total", provider=provider, model=name),
        value(samples, "parley_output_tokens_total", provider=provider, model=name),
    )


def _session(user: UserClient, model: str = MODEL) -> str:
    return user.create_session(user.create_agent(model=model).name).name


def test_a_text_reply_moves_runs_tokens_time_to_first_token_and_grpc_counters(
    telemetry_server: ServerProcess, user: UserClient
) -> None:
    url = telemetry_server.metrics_url
    session = _session(user)
    before = scrape(url)
    events = user.send(session, "Hello! Say something.")
    reply = events[-1].message_completed.message
    assert reply.status == pb.Message.STATUS_COMPLETE and reply.text == "Hello there."
    after = wait_for_metrics(
        url, lambda s: _runs(s, "complete", "end_turn") > _runs(before, "complete", "end_turn")
    )

    assert _runs(after, "complete", "end_turn") - _runs(before, "complete", "end_turn") == 1
    tokens_before, tokens_after = _tokens(before, MODEL), _tokens(after, MODEL)
    assert tokens_after[0] - tokens_before[0] == reply.usage.input_tokens == 20
    assert tokens_after[1] - tokens_before[1] == reply.usage.output_tokens == 3
    ttft = {"provider": "standin", "model": "hello"}
    count = "parley_time_to_first_token_seconds_count"
    assert value(after, count, **ttft) - value(before, count, **ttft) == 1
    assert value(after, "parley_runs_active") == 0
    # The gRPC call itself: started, handled OK, one message in, every event out, none in flight.
    labels = {"grpc_type": "server_stream", "grpc_service": CHAT, "grpc_method": "SendMessage"}
    assert (
        _handled(after, CHAT, "SendMessage", "OK", "server_stream")
        - _handled(before, CHAT, "SendMessage", "OK", "server_stream")
        == 1
    )
    for name, moved in [
        ("grpc_server_started_total", 1),
        ("grpc_server_msg_received_total", 1),
        ("grpc_server_msg_sent_total", len(events)),
        ("grpc_server_handling_seconds_count", 1),
    ]:
        assert value(after, name, **labels) - value(before, name, **labels) == moved, name
    assert value(after, "grpc_server_in_flight_calls", **labels) == 0


def test_a_voice_reply_moves_speech_to_text_text_to_speech_and_time_to_first_audio(
    telemetry_server: ServerProcess, user: UserClient
) -> None:
    url = telemetry_server.metrics_url
    session = _session(user)
    before = scrape(url)
    events = list(
        user.stubs.chat.SendVoiceMessage(
            pb.SendVoiceMessageRequest(session=session, audio=espeak_wav("What is the capital of France?"))
        )
    )
    reply = events[-1].message_completed.message
    assert reply.text == "Hello there." and events[1].WhichOneof("event") == "transcript"
    sentences = {e.audio_chunk.segment_index for e in events if e.audio_chunk.text}
    assert sentences == {0}
    after = wait_for_metrics(
        url, lambda s: _runs(s, "complete", "end_turn") > _runs(before, "complete", "end_turn")
    )

    local = {"provider": "local"}
    for name, moved in [
        ("parley_speech_to_text_seconds_count", 1),
        ("parley_text_to_speech_seconds_count", len(sentences)),
        ("parley_time_to_first_audio_seconds_count", 1),
    ]:
        assert value(after, name, **local) - value(before, name, **local) == moved, name
    assert value(after, "parley_speech_to_text_seconds_sum", **local) > value(
        before, "parley_speech_to_text_seconds_sum", **local
    )
    assert _runs(after, "complete", "end_turn") - _runs(before, "complete", "end_turn") == 1
    tokens_before, tokens_after = _tokens(before, MODEL), _tokens(after, MODEL)
    assert (tokens_after[0] - tokens_before[0], tokens_after[1] - tokens_before[1]) == (
        reply.usage.input_tokens,
        reply.usage.output_tokens,
    )
    assert (
        _handled(after, CHAT, "SendVoiceMessage", "OK", "server_stream")
        - _handled(before, CHAT, "SendVoiceMessage", "OK", "server_stream")
        == 1
    )


def test_a_failed_rpc_moves_its_code(telemetry_server: ServerProcess, user: UserClient) -> None:
    url = telemetry_server.metrics_url
    service = "parley.v1.AgentService"
    before = scrape(url)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        user.stubs.agents.GetAgent(apb.GetAgentRequest(name="agents/0190aaaa-0000-7000-8000-000000000000"))
    after = scrape(url)  # the unary call is counted before its status is sent
    assert (
        _handled(after, service, "GetAgent", "NOT_FOUND", "unary")
        - _handled(before, service, "GetAgent", "NOT_FOUND", "unary")
        == 1
    )
    assert _handled(after, service, "GetAgent", "OK", "unary") == _handled(
        before, service, "GetAgent", "OK", "unary"
    )
    labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": "GetAgent"}
    assert value(after, "grpc_server_msg_sent_total", **labels) == value(
        before, "grpc_server_msg_sent_total", **labels
    )


def test_a_provider_error_is_counted_by_reason_and_the_run_as_failed(
    telemetry_server: ServerProcess, user: UserClient
) -> None:
    url = telemetry_server.metrics_url
    session = _session(user, "standin/status-429")
    before = scrape(url)
    with expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED"):
        user.send(session, "Hi")
    after = wait_for_metrics(url, lambda s: _runs(s, "failed", "error") > _runs(before, "failed", "error"))
    errors = {"provider": "standin", "reason": "PROVIDER_RATE_LIMITED"}
    assert (
        value(after, "parley_provider_errors_total", **errors)
        - value(before, "parley_provider_errors_total", **errors)
        == 1
    )
    assert _runs(after, "failed", "error") - _runs(before, "failed", "error") == 1
    assert (
        _handled(after, CHAT, "SendMessage", "RESOURCE_EXHAUSTED", "server_stream")
        - _handled(before, CHAT, "SendMessage", "RESOURCE_EXHAUSTED", "server_stream")
        == 1
    )


def test_storage_and_event_loop_metrics_are_served(telemetry_server: ServerProcess, user: UserClient) -> None:
    url = telemetry_server.metrics_url
    session = _session(user)
    before = scrape(url)
    user.send(session, "Once more.")
    after = scrape(url)
    system = "postgresql" if os.environ.get("PARLEY_TEST_DATABASE") == "postgres" else "sqlite"
    selects = {"system": system, "operation": "SELECT"}
    inserts = {"system": system, "operation": "INSERT"}
    name = "parley_db_query_duration_seconds_count"
    assert value(after, name, **selects) > value(before, name, **selects)
    assert value(after, name, **inserts) > value(before, name, **inserts)
    # Sampled ten times a second since start-up: the count keeps growing.
    lag = "parley_event_loop_lag_seconds_count"
    after = wait_for_metrics(url, lambda s: value(s, lag) > value(before, lag))
    assert ("parley_event_loop_lag_max_seconds", frozenset()) in after
    # prometheus-client's own collectors come with it.
    assert value(after, "process_resident_memory_bytes") > 0


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on, from /proc (Linux): its socket inodes matched
    against the LISTEN entries of /proc/net/tcp and tcp6."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_metrics_off_nothing_listens(
    server_factory: Callable[..., ServerProcess], telemetry_server: ServerProcess
) -> None:
    off = server_factory(metrics_listen="")
    assert off.process is not None and telemetry_server.process is not None
    assert _listening_ports(off.process.pid) == {off.port}
    with pytest.raises(LookupError):
        _ = off.metrics_port
    # The same check sees the endpoint of a server that has one.
    assert _listening_ports(telemetry_server.process.pid) == {
        telemetry_server.port,
        telemetry_server.metrics_port,
    }
