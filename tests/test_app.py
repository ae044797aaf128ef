"""The server process as a whole: health, reflection, restarts, graceful shutdown, unsafe settings,
the signing key of a default install."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parley_proto.v1 import auth_service_pb2
from parley_proto.v1 import chat_service_pb2 as pb

from tests.conftest import TEST_JWT_SECRET, TEST_MAX_OUTPUT_TOKENS
from tests.support.client import Stubs, UserClient, expect_error, new_user
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
    inherited = {k: v for k, v in os.environ.items() if k != "PARLEY_JWT_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "parley"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**inherited, "PARLEY_DATA_DIR": str(tmp_path), "PARLEY_GRPC_LISTEN": "127.0.0.1:0", **env},
        check=False,
    )


def test_production_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = _start_expecting_failure({"PARLEY_ENVIRONMENT": "production"}, tmp_path)
    assert result.returncode != 0 and "PARLEY_JWT_SECRET must be set" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr  # how to make one
    assert not (tmp_path / "parley.db").exists()
    assert not (tmp_path / "jwt-secret").exists()  # production never falls back to a generated key


def test_short_secret_is_refused(tmp_path: Path) -> None:
    result = _start_expecting_failure({"PARLEY_JWT_SECRET": "too-short"}, tmp_path)
    assert result.returncode != 0 and "at least 32 bytes" in result.stderr


#: The signing key every install shared before keys were generated per install (it was printed
#: in the repository, so anyone could sign tokens with it).
OLD_BUILT_IN_SECRET = "parley-development-secret-change-me-0123456789abcdef0123456789abcdef"


def _default_install(data: Path) -> ServerProcess:
    """A server as a default install runs it: no PARLEY_JWT_SECRET (not even from the test
    runner's environment), its own SQLite file in ``data``."""
    proc = ServerProcess(
        data,
        f"sqlite+aiosqlite:///{data / 'parley.db'}",
        default_max_output_tokens=TEST_MAX_OUTPUT_TOKENS,
        local_seed="42",
    )
    proc.env.pop("PARLEY_JWT_SECRET", None)
    return proc


def _whoami(channel: grpc.Channel, token: str) -> str:
    stubs = UserClient(channel, "x", "x", access_token=token).stubs
    return str(stubs.auth.GetCurrentUser(auth_service_pb2.GetCurrentUserRequest()).user.name)


def test_a_default_install_signs_with_its_own_key_and_keeps_it(tmp_path: Path) -> None:
    """Without PARLEY_JWT_SECRET the first start generates a key into {data_dir}/jwt-secret (mode
    0600); a restart reads the same key, so a token issued before it still works, while a token
    signed with any other key (the old built-in one included) is refused."""
    data = tmp_path / "data"
    key_file = data / "jwt-secret"
    first = _default_install(data)
    try:
        first.start()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert len(key.encode()) >= 64 and key not in first.log()
        with grpc.insecure_channel(first.target) as ch:
            user = new_user(ch)
            assert _whoami(ch, user.access_token) == user.user_name
    finally:
        assert first.stop() == 0
    second = _default_install(data)
    try:
        second.start()
        assert key_file.read_text().strip() == key
        with grpc.insecure_channel(second.target) as ch:
            assert _whoami(ch, user.access_token) == user.user_name  # issued before the restart
            claims = jwt.decode(user.access_token, options={"verify_signature": False})
            assert claims["sub"] == user.user_name.removeprefix("users/")
            for other_key in (OLD_BUILT_IN_SECRET, TEST_JWT_SECRET, secrets.token_urlsafe(64)):
                forged = jwt.encode(claims, other_key, algorithm="HS256")
                with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"):
                    _whoami(ch, forged)
            # The refresh token was signed with the same key: it still rotates after the restart.
            refreshed = Stubs.over(ch).auth.RefreshToken(
                auth_service_pb2.RefreshTokenRequest(refresh_token=user.refresh_token)
            )
            assert _whoami(ch, refreshed.access_token) == user.user_name
    finally:
        assert second.stop() == 0


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
