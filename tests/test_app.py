"""The server process as a whole: health, reflection, restarts, graceful shutdown, unsafe settings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parley_proto.v1 import chat_service_pb2 as pb

from tests.support.client import new_user
from tests.support.server import ROOT, ServerProcess

SERVICES = [
    "parley.v1.AuthService",
    "parley.v1.AgentService",
    "parley.v1.SessionService",
    "parley.v1.ChatService",
    "parley.v1.BranchService",
]


def test_health_per_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", *SERVICES]:
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=service)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="parley.v1.Nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpcurl_lists_services_through_reflection(server_target: str) -> None:
    out = subprocess.run(
        ["grpcurl", "-plaintext", server_target, "list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    listed = set(out.stdout.split())
    assert set(SERVICES) <= listed and "grpc.health.v1.Health" in listed
    described = subprocess.run(
        ["grpcurl", "-plaintext", server_target, "describe", "parley.v1.ChatService"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert "SendMessage" in described.stdout and "stream .parley.v1.ChatEvent" in described.stdout


def test_history_survives_a_restart(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'parley.db'}"
    first = server_factory(data_dir=data, database=url)
    with grpc.insecure_channel(first.target) as ch:
        user = new_user(ch)
        session = user.create_session()
        user.send(session.name, "Remember this: the password is 'marigold'.")
        before = user.messages(session.name)
    assert first.stop() == 0
    second = server_factory(data_dir=data, database=url)
    with grpc.insecure_channel(second.target) as ch:
        user.channel = ch
        user.__post_init__()
        after = user.messages(session.name)
    assert after == before and len(after) == 2


def test_sigterm_stores_the_streaming_reply_incomplete(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'parley.db'}"
    proc = server_factory(data_dir=data, database=url, shutdown_grace_seconds="0.5")
    with grpc.insecure_channel(proc.target) as ch:
        user = new_user(ch)
        agent = user.create_agent(max_output_tokens=400, instructions="Write long, detailed stories.")
        session = user.create_session(agent.name)
        events: list[pb.ChatEvent] = []
        errors: list[grpc.RpcError] = []
        started = threading.Event()

        def consume() -> None:
            try:
                for event in user.stubs.chat.SendMessage(
                    pb.SendMessageRequest(session=session.name, text="A very long story.")
                ):
                    events.append(event)
                    if event.WhichOneof("event") == "text_delta":
                        started.set()
            except grpc.RpcError as exc:
                errors.append(exc)
            finally:
                started.set()

        reader = threading.Thread(target=consume)
        reader.start()
        assert started.wait(60)
        proc.terminate()
        assert proc.wait(60) == 0
        reader.join(30)
    assert errors, "the stream should have been cut by the shutdown"
    assert errors[0].code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    restarted = server_factory(data_dir=data, database=url)
    with grpc.insecure_channel(restarted.target) as ch:
        user.channel = ch
        user.__post_init__()
        stored = user.messages(session.name)
    assert [m.role for m in stored] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT]
    assert stored[0].text == "A very long story."
    reply = stored[1]
    assert reply.status == pb.Message.STATUS_INCOMPLETE and reply.stop_reason == pb.STOP_REASON_SHUTDOWN
    assert reply.text.startswith("".join(e.text_delta.text for e in events))


def _start_expecting_failure(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PARLEY_DATA_DIR": str(tmp_path), "PARLEY_GRPC_LISTEN": "127.0.0.1:0", **env},
        check=False,
    )


def test_production_refuses_the_default_secret(tmp_path: Path) -> None:
    result = _start_expecting_failure({"PARLEY_ENVIRONMENT": "production"}, tmp_path)
    assert result.returncode != 0 and "PARLEY_JWT_SECRET must be set" in result.stderr
    assert not (tmp_path / "parley.db").exists()


def test_short_secret_is_refused(tmp_path: Path) -> None:
    result = _start_expecting_failure({"PARLEY_JWT_SECRET": "too-short"}, tmp_path)
    assert result.returncode != 0 and "at least 32 bytes" in result.stderr


def test_migrations_match_the_models(server: ServerProcess, database_url: str) -> None:
    """`alembic check` on the database the server migrated: the migrations give exactly the schema the
    code declares."""
    env = {**os.environ, "PARLEY_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_access_log_has_request_ids(server: ServerProcess, channel: grpc.Channel) -> None:
    new_user(channel, prefix="logged")
    time.sleep(0.2)
    lines = [line for line in server.log().splitlines() if "parley.v1.AuthService/CreateToken" in line]
    assert lines and "request_id=" in lines[-1] and " OK " in lines[-1]
