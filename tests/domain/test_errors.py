"""Error reasons are part of the contract: the domain's ``Reason`` is the proto's ``ErrorReason``."""

from __future__ import annotations

import ast
from pathlib import Path

from parley.domain.errors import Reason
from parley_proto.v1 import errors_pb2

SERVER = Path(__file__).resolve().parents[2] / "server" / "parley"


def test_reason_names_equal_the_proto_enum() -> None:
    proto = set(errors_pb2.DESCRIPTOR.enum_types_by_name["ErrorReason"].values_by_name) - {
        "ERROR_REASON_UNSPECIFIED"
    }
    assert {r.name for r in Reason} == proto
    assert all(r.value == r.name for r in Reason)


def test_no_reason_is_a_string_literal_in_the_server() -> None:
    """Every ``reason=`` in the server names a ``Reason`` member, so no reason escapes the enum."""
    offenders = []
    for path in sorted(SERVER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "reason"
                and isinstance(node.value, ast.Constant)
            ):
                offenders.append(f"{path.relative_to(SERVER)}:{node.value.lineno}")
    assert offenders == []
