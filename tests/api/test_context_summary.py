"""Context memory (PARLEY_CONTEXT_SUMMARY=true): trimmed history becomes a cached running summary.

A server with a small context window (512 tokens) and the real local model; long messages make
the history outgrow the window after a few sends. The summaries table is read directly.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import session_service_pb2 as spb

from tests.support.client import new_user
from tests.support.server import ServerProcess

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "pink", "brown"]
SENDS = 11


def _summaries(db: Path, session_id: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute(
                "SELECT message_id, text, model FROM summaries WHERE session_id = ? ORDER BY create_time",
                (session_id,),
            )
        )


def test_trimmed_history_is_summarized_once_per_cut(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = tmp_path / "parley.db"
    proc = server_factory(
        data_dir=tmp_path / "data",
        database=f"sqlite+aiosqlite:///{db}",
        context_summary="true",
        local_context_window="512",
    )
    with grpc.insecure_channel(proc.target) as channel:
        user = new_user(channel)
        agent = user.create_agent(max_output_tokens=16, instructions="You are a helpful assistant.")
        session = user.create_session(agent.name)
        session_id = session.name.removeprefix("sessions/")
        counts: list[int] = []
        for i in range(SENDS):
            colour = COLOURS[i]
            text = (
                f"Fact number {i}: the {colour} box on shelf {i} holds {i * 7 + 3} glass marbles, "
                f"and my neighbour, who is called {colour.title()} Smith, painted it last spring. "
                "Please remember this for later, together with every other detail I tell you today."
            )
            reply = user.send(session.name, text)[-1].message_completed.message
            assert reply.status == pb.Message.STATUS_COMPLETE
            assert 0 < reply.usage.input_tokens <= 512 - 16
            counts.append(len(_summaries(db, session_id)))

        rows = _summaries(db, session_id)
        assert counts[0] == 0 and rows, f"no summary was made: {counts}"
        assert counts == sorted(counts)
        # A new cut keeps only half of the budget, so the send after a new summary reuses it.
        made = [i for i in range(1, SENDS) if counts[i] > counts[i - 1]]
        assert all(b - a > 1 for a, b in itertools.pairwise(made)), counts
        assert len(rows) < SENDS - counts.index(1)
        stored = {m.name.rsplit("/", 1)[1] for m in user.messages(session.name)}
        for message_id, text, model in rows:
            assert message_id in stored and text.strip() and model == "local/smollm2-135m-instruct"

        user.stubs.sessions.DeleteSession(spb.DeleteSessionRequest(name=session.name))
        assert _summaries(db, session_id) == []  # the cache goes with the session
