"""The operators' RPCs over REST: AdminService, UsageService, and DeleteUser (DELETE with a body)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from tests.rest.helpers import assert_status, bearer
from tests.support.client import UserClient, new_user
from tests.support.envoy import EnvoyProcess
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def ops_envoy(
    server_factory: Callable[..., ServerProcess],
    fresh_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EnvoyProcess]:
    """Envoy in front of a server with a database of its own (its first user is the admin)."""
    server = server_factory(database=fresh_database())
    proc = EnvoyProcess(server.target, tmp_path_factory.mktemp("envoy-ops"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def people(ops_envoy: EnvoyProcess) -> Iterator[tuple[UserClient, UserClient]]:
    with grpc.insecure_channel(ops_envoy.upstream) as channel:
        yield new_user(channel, prefix="rest-admin"), new_user(channel, prefix="rest-member")


def test_admin_and_usage_over_rest(ops_envoy: EnvoyProcess, people: tuple[UserClient, UserClient]) -> None:
    admin, member = people
    with (
        httpx.Client(base_url=ops_envoy.base_url, headers=bearer(admin), timeout=60) as a,
        httpx.Client(base_url=ops_envoy.base_url, headers=bearer(member), timeout=60) as m,
    ):
        listed = a.get("/v1/admin/users", params={"usernamePrefix": "rest-"})
        assert listed.status_code == 200, listed.text
        users = {u["username"]: u for u in listed.json()["users"]}
        assert users[admin.username]["role"] == "ROLE_ADMIN"
        assert users[member.username]["role"] == "ROLE_USER"
        assert_status(m.get("/v1/admin/users"), 403, 7, "ADMIN_REQUIRED")

        patched = a.patch(
            f"/v1/admin/{member.user_name}",
            params={"updateMask": "quota.outputTokensPerDay"},
            json={"quota": {"outputTokensPerDay": 5000}},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["user"]["quota"]["outputTokensPerDay"] == "5000"

        settings = a.get("/v1/admin/settings")
        assert settings.status_code == 200 and settings.json()["settings"]["name"] == "settings"
        changed = a.patch(
            "/v1/admin/settings",
            params={"updateMask": "defaultQuota.inputTokensPerDay"},
            json={"defaultQuota": {"inputTokensPerDay": "1000000"}},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["settings"]["defaultQuota"]["inputTokensPerDay"] == "1000000"

        agent = m.post("/v1/agents", json={"displayName": "A"}).json()["agent"]["name"]
        session = m.post("/v1/sessions", json={"agent": agent}).json()["session"]["name"]
        with m.stream("POST", f"/v1/{session}:sendMessage", json={"text": "Hi"}) as r:
            r.read()
        for parent in ("users/me", agent, session, f"{session}/branches/main"):
            usage = m.get(f"/v1/{parent}/usage")
            assert usage.status_code == 200, (parent, usage.text)
            body = usage.json()
            assert (
                int(body["outputTokens"]) > 0
                and body["messageCount"] == "2"
                and body["completedReplies"] == "1"
            )
        assert_status(m.get(f"/v1/{admin.user_name}/usage"), 404, 5, "RESOURCE_NOT_FOUND")


def test_delete_user_over_rest(ops_envoy: EnvoyProcess, people: tuple[UserClient, UserClient]) -> None:
    with grpc.insecure_channel(ops_envoy.upstream) as channel:
        leaver = new_user(channel, prefix="rest-leaver")
    with httpx.Client(base_url=ops_envoy.base_url, headers=bearer(leaver), timeout=60) as client:
        wrong = client.request("DELETE", "/v1/users/me", json={"password": "not the password"})
        assert_status(wrong, 401, 16, "INVALID_CREDENTIALS")
        assert client.get("/v1/users/me").status_code == 200
        gone = client.request("DELETE", "/v1/users/me", json={"password": leaver.password})
        assert gone.status_code == 200, gone.text
        assert_status(client.get("/v1/users/me"), 401, 16, "INVALID_TOKEN")
