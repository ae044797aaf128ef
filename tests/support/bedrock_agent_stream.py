"""InvokeAgent answered by botocore's Stubber with a real ``completion`` event stream.

No Bedrock endpoint can run here, so Bedrock Agents are the one mock of the suite (as Bedrock's
ConverseStream is): botocore's ``Stubber`` answers ``invoke_agent`` calls (checking the call's
parameters against the real service model first), and the ``completion`` it returns is a real
botocore ``EventStream`` over bytes in the AWS event-stream encoding (prelude, headers, payload,
CRC-32s), built here from the documented InvokeAgent event shapes (``chunk`` with ``bytes`` and
``attribution``, ``returnControl``, and the exception events such as ``throttlingException``).
So botocore's own decoder and parser read them, error events included (raised as
``EventStreamError``, as against Bedrock).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
from botocore.eventstream import EventStream
from botocore.parsers import EventStreamJSONParser
from botocore.stub import Stubber

__all__ = [
    "AgentStub",
    "chunk",
    "encode_message",
    "error_event",
    "return_control",
]

Frame = tuple[dict[str, str], bytes]


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: string headers (type 7) and ``payload``, with both CRCs."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode())) + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    head = prelude + struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = head + encoded + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def _event(event_type: str, body: dict[str, Any]) -> Frame:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return headers, json.dumps(body).encode()


def chunk(text: str, citations: Sequence[dict[str, Any]] = ()) -> Frame:
    """A ``chunk`` event: ``bytes`` (base64 in the JSON payload, as the blob is sent) and, with
    ``citations``, ``attribution.citations``."""
    body: dict[str, Any] = {"bytes": base64.b64encode(text.encode()).decode()}
    if citations:
        body["attribution"] = {"citations": list(citations)}
    return _event("chunk", body)


def return_control(invocation_id: str, inputs: Sequence[dict[str, Any]]) -> Frame:
    """A ``returnControl`` event."""
    return _event("returnControl", {"invocationId": invocation_id, "invocationInputs": list(inputs)})


def error_event(code: str, message: str) -> Frame:
    """An exception event (``throttlingException``, ``accessDeniedException`` ...)."""
    headers = {":exception-type": code, ":content-type": "application/json", ":message-type": "exception"}
    return headers, json.dumps({"message": message}).encode()


class _Body:
    """The raw HTTP body botocore's ``EventStream`` reads: ``stream()`` yields the encoded
    messages one at a time; ``close()`` is recorded (and ends a body that waits)."""

    def __init__(self, frames: Sequence[Frame], *, block: bool = False) -> None:
        self.frames = list(frames)
        self.block = block
        self.closed = threading.Event()

    def stream(self) -> Iterator[bytes]:
        for headers, payload in self.frames:
            if self.closed.is_set():
                return
            yield encode_message(headers, payload)
        if self.block:
            self.closed.wait(30)

    def close(self) -> None:
        self.closed.set()


class AgentStub:
    """A ``bedrock-agent-runtime`` client under a Stubber, and the parameters of every call."""

    def __init__(self) -> None:
        self.client = boto3.client(
            "bedrock-agent-runtime",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        self.stubber = Stubber(self.client)
        self.calls: list[dict[str, Any]] = []
        self.bodies: list[_Body] = []
        self.client.meta.events.register(
            "provide-client-params.bedrock-agent-runtime.InvokeAgent", self._record
        )
        operation = self.client.meta.service_model.operation_model("InvokeAgent")
        self._shape = operation.output_shape.members["completion"]
        self.stubber.activate()

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(json.loads(json.dumps(params)))

    def answer(
        self, frames: Sequence[Frame], expected: dict[str, Any] | None = None, *, block: bool = False
    ) -> _Body:
        """Queue one ``invoke_agent`` answer streaming ``frames`` (``expected``: the exact
        parameters the call must have)."""
        body = _Body(frames, block=block)
        response: dict[str, Any] = {
            "completion": {},
            "contentType": "application/json",
            "sessionId": "stubbed",
        }
        self.stubber.add_response("invoke_agent", response, expected)
        response["completion"] = EventStream(body, self._shape, EventStreamJSONParser(), "InvokeAgent")
        self.bodies.append(body)
        return body

    def refuse(self, code: str, status: int, expected: dict[str, Any] | None = None) -> None:
        """Queue an ``invoke_agent`` that fails before the stream (HTTP ``status``)."""
        self.stubber.add_client_error(
            "invoke_agent",
            service_error_code=code,
            service_message="refused",
            http_status_code=status,
            expected_params=expected,
        )
