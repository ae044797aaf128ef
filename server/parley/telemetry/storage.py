"""Storage latency metrics: SQL statements (SQLAlchemy engine events) and MongoDB commands
(PyMongo command monitoring).

- ``parley_db_query_duration_seconds{system, operation}``: one observation per statement the
  engine sends (``before_cursor_execute`` → ``after_cursor_execute`` on ``engine.sync_engine``;
  a failed statement is observed from ``handle_error``). ``system`` is the dialect
  (``sqlite``, ``postgresql``), ``operation`` the statement's first keyword (``SELECT``,
  ``INSERT`` ...; anything else is ``OTHER``). With the SQL content store (the default) message
  content is SQL too, so this histogram covers it.
- ``parley_content_store_command_duration_seconds{command, outcome}``: one observation per
  MongoDB command of the MongoDB content store (``find``, ``update``, ``delete`` ...;
  ``outcome`` ``success`` or ``failure``), from the driver's own timing of the round trip.

The time is the caller's wait: with the async engines it includes waiting for the event loop
between the driver's steps, which is what a slow request sees.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram
from pymongo import monitoring
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["CONTENT_STORE_COMMANDS", "DB_QUERIES", "CommandTimer", "instrument_engine"]

#: Statement and command durations: half a millisecond to 10 seconds.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OPERATIONS = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
     "PRAGMA", "CREATE", "ALTER", "DROP"}
)  # fmt: skip
_STACK = "parley_query_started"

DB_QUERIES = Histogram(
    "parley_db_query_duration_seconds",
    "Seconds one SQL statement took, as the caller waited for it.",
    ["system", "operation"],
    buckets=_BUCKETS,
)
CONTENT_STORE_COMMANDS = Histogram(
    "parley_content_store_command_duration_seconds",
    "Seconds one MongoDB command of the content store took (the driver's round-trip time).",
    ["command", "outcome"],
    buckets=_BUCKETS,
)


def _operation(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    return word if word in _OPERATIONS else "OTHER"


def instrument_engine(engine: Engine) -> None:
    """Observe every statement of ``engine`` (an async engine's ``sync_engine``) in
    :data:`DB_QUERIES`. Listeners stay for the engine's life."""
    system = engine.dialect.name

    def before(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info.setdefault(_STACK, []).append(time.perf_counter())

    def after(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        stack = conn.info.get(_STACK)
        if stack:
            DB_QUERIES.labels(system, _operation(statement)).observe(time.perf_counter() - stack.pop())

    def failed(context: Any) -> None:
        stack = context.connection.info.get(_STACK) if context.connection is not None else None
        if stack:
            statement = context.statement or ""
            DB_QUERIES.labels(system, _operation(statement)).observe(time.perf_counter() - stack.pop())

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


class CommandTimer(monitoring.CommandListener):
    """A PyMongo command listener (``event_listeners=[CommandTimer()]``) observing every command in
    :data:`CONTENT_STORE_COMMANDS`. Called by the driver on the event loop's thread; it does
    one histogram observation per command and nothing else."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        CONTENT_STORE_COMMANDS.labels(event.command_name, "success").observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        CONTENT_STORE_COMMANDS.labels(event.command_name, "failure").observe(event.duration_micros / 1e6)
