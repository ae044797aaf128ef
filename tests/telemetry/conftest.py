"""Fixtures of the telemetry tests: one real server with metrics and tracing on, whose model is the
scripted OpenAI-compatible stand-in (exact usage, fast), exporting spans to a real OTLP/HTTP
receiver in the test process (``tests/support/prometheus.py`` reads its ``/metrics``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc
import pytest

from tests.support.client import UserClient, new_user
from tests.support.http_tool_server import HttpToolServer, running_http_tool_server
from tests.support.openai_standin import running_standin
from tests.support.otlp_receiver import OtlpReceiver, running_otlp_receiver
from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def receiver() -> Iterator[OtlpReceiver]:
    with running_otlp_receiver() as r:
        yield r


@pytest.fixture(scope="session")
def peers() -> Iterator[tuple[str, HttpToolServer]]:
    with running_standin() as standin_url, running_http_tool_server() as http_tools:
        yield standin_url, http_tools


@pytest.fixture(scope="session")
def telemetry_server(
    server_factory: Callable[..., ServerProcess],
    peers: tuple[str, HttpToolServer],
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> ServerProcess:
    standin_url, _ = peers
    return server_factory(
        tmp_path_factory.mktemp("telemetry"),
        openai_compatible=json.dumps({"standin": {"base_url": standin_url}}),
        tools_allowed_hosts='["127.0.0.1"]',
        provider_max_retries="0",
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans reach the receiver soon after they end
            "OTEL_SERVICE_NAME": "parley-under-test",
        },
    )


@pytest.fixture(scope="session")
def user(telemetry_server: ServerProcess) -> Iterator[UserClient]:
    with grpc.insecure_channel(telemetry_server.target) as channel:
        yield new_user(channel, prefix="observed")
