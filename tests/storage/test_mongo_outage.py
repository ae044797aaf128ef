"""A Parley server storing message content in MongoDB (FerretDB) when that server goes away."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import session_service_pb2 as spb

from tests.support.client import expect_error, new_user
from tests.support.ferretdb import running_ferretdb
from tests.support.net import free_port
from tests.support.server import ServerProcess


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_mongodb_outage_is_unavailable_and_nothing_half_stored(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = tmp_path / "parley.db"
    with ExitStack() as mongo:
        url = mongo.enter_context(running_ferretdb(tmp_path / "ferretdb"))
        proc = server_factory(
            data_dir=tmp_path / "data",
            database=f"sqlite+aiosqlite:///{db}",
            mongodb_url=url,
            mongodb_timeout_seconds="1",
        )
        with grpc.insecure_channel(proc.target) as channel:
            user = new_user(channel)
            session = user.create_session()
            user.send(session.name, "Remember: marigold.")
            before = user.messages(session.name)
            assert len(before) == 2 and before[0].text == "Remember: marigold."
            assert _rows(db, "message_contents") == 0  # content lives in MongoDB

            mongo.close()  # FerretDB stops

            with expect_error(grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"):
                user.messages(session.name)
            events: list[pb.ChatEvent] = []
            with expect_error(grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"):
                events.extend(user.send(session.name, "Are you there?"))
            assert events == []  # refused before anything was accepted
            # The SQL side is untouched: the tree still has exactly the two messages.
            assert _rows(db, "messages") == 2
            # What needs no message content still works.
            got = user.stubs.sessions.GetSession(spb.GetSessionRequest(name=session.name)).session
            assert got.name == session.name


def test_server_refuses_to_start_without_its_mongodb(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="message store unavailable"):
        server_factory(
            data_dir=tmp_path / "data",
            database=f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
            mongodb_url=f"mongodb://127.0.0.1:{free_port()}/",
            mongodb_timeout_seconds="0.5",
        )
