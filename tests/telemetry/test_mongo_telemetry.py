"""The MongoDB content store's commands: latency in ``/metrics`` (PyMongo's command monitoring) and
CLIENT spans of the same trace (opentelemetry-instrumentation-pymongo, with PyMongo's
``AsyncMongoClient``), against a real MongoDB-wire server (FerretDB, ``tests/support/ferretdb.py``)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import grpc
import pytest
from parley_proto.v1 import chat_service_pb2 as pb

from tests.support.client import new_user
from tests.support.http_tool_server import HttpToolServer
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.prometheus import scrape, value, wait_for_metrics
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def mongo_server(
    server_factory: Callable[..., ServerProcess],
    ferretdb_url: str,
    peers: tuple[str, HttpToolServer],
    receiver: OtlpReceiver,
) -> ServerProcess:
    standin_url, _ = peers
    return server_factory(
        mongodb_url=ferretdb_url,
        openai_compatible=json.dumps({"standin": {"base_url": standin_url}}),
        environ={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"},
    )


def test_content_store_commands_are_timed_and_traced(
    mongo_server: ServerProcess, receiver: OtlpReceiver
) -> None:
    url = mongo_server.metrics_url
    with grpc.insecure_channel(mongo_server.target) as channel:
        user = new_user(channel, prefix="mongo")
        session = user.create_session(user.create_agent(model="standin/hello").name).name
        before = scrape(url)
        trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
        events = list(
            user.stubs.chat.SendMessage(
                pb.SendMessageRequest(session=session, text="Store me"),
                metadata=[("traceparent", f"00-{trace_id}-{span_id}-01")],
            )
        )
        assert events[-1].message_completed.message.text == "Hello there."
    name = "parley_content_store_command_duration_seconds_count"

    def writes(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
        return sum(value(samples, name, command=c, outcome="success") for c in ("update", "insert"))

    after = wait_for_metrics(url, lambda s: writes(s) > writes(before))
    assert writes(after) > writes(before)

    def parented(got: list[ReceivedSpan]) -> bool:
        """pymongo spans of the trace arrived, and so did their parents: spans come in export
        batches, and a parent (the RPC, the run) ends, so is exported, after its children."""
        ours = [s for s in got if s.trace_id == trace_id]
        known = {s.span_id for s in ours}
        mongo = [s for s in ours if s.scope.endswith("pymongo")]
        return bool(mongo) and all(s.parent_span_id in known for s in mongo)

    try:
        spans = receiver.wait_for(parented)
    except AssertionError:  # report what is missing below
        spans = receiver.snapshot()
    ours = [s for s in spans if s.trace_id == trace_id]
    mongo = [s for s in ours if s.scope.endswith("pymongo")]
    assert mongo and all(s.kind == "SPAN_KIND_CLIENT" for s in mongo)
    known = {s.span_id for s in ours}
    assert all(s.parent_span_id in known for s in mongo)  # children of the RPC or the run, in the trace
    assert all("Store me" not in json.dumps(s.attributes) for s in mongo)
