"""Fixtures for the REST tests: a real Envoy (envoy/envoy.yaml) in front of the session's server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.rest.helpers import RestUser, bearer
from tests.support.client import UserClient
from tests.support.envoy import EnvoyProcess
from tests.support.net import free_port
from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def envoy(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    """Envoy on free ports, transcoding REST to the session's gRPC server."""
    proc = EnvoyProcess(server.target, tmp_path_factory.mktemp("envoy"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def dead_upstream_envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    """A second Envoy whose upstream port has nothing listening on it."""
    proc = EnvoyProcess(f"127.0.0.1:{free_port()}", tmp_path_factory.mktemp("envoy-dead"))
    proc.start(wait_healthy=False)
    yield proc
    proc.stop()


@pytest.fixture
def http(envoy: EnvoyProcess) -> Iterator[httpx.Client]:
    """An anonymous REST client."""
    with httpx.Client(base_url=envoy.base_url, timeout=60.0) as client:
        yield client


def _rest_user(envoy: EnvoyProcess, user: UserClient) -> Iterator[RestUser]:
    with httpx.Client(base_url=envoy.base_url, headers=bearer(user), timeout=60.0) as client:
        yield RestUser(user, client)


@pytest.fixture
def rest_alice(envoy: EnvoyProcess, alice: UserClient) -> Iterator[RestUser]:
    yield from _rest_user(envoy, alice)


@pytest.fixture
def rest_bob(envoy: EnvoyProcess, bob: UserClient) -> Iterator[RestUser]:
    yield from _rest_user(envoy, bob)
