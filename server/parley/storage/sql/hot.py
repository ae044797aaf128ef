"""The statements every reply runs, built once with bound parameters.

A send, its checkpoints and its end write the same few statements every time. Built per call,
SQLAlchemy constructs, coerces and keys each one again before it finds the compiled form in its
cache: about as much CPU as running it on SQLite (``bench/``: per-request CPU). Built once, a
statement's cache key is computed once too, and each call only binds its parameters.

SET clauses come from the parameters of each call (SQLAlchemy's ``update()`` without
``values()``: the keys that are column names), so the WHERE parameters are named ``b_*``.
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, update

from parley.domain.models import MessageStatus
from parley.storage.sql.tables import branches, messages, runs, sessions, usage_records

__all__ = [
    "CHECKPOINT",
    "FINISH_MESSAGE",
    "FINISH_RUN",
    "FINISH_USAGE",
    "INSERT_MESSAGES",
    "INSERT_RUN",
    "INSERT_USAGE",
    "MOVE_EMPTY_HEAD",
    "MOVE_HEAD",
    "TOUCH_SESSION",
    "UNFINISHED",
]

#: The states a reply can still be finished from.
UNFINISHED = (MessageStatus.IN_PROGRESS.value, MessageStatus.REQUIRES_ACTION.value)

INSERT_MESSAGES = insert(messages)
INSERT_RUN = insert(runs)
INSERT_USAGE = insert(usage_records)

#: Compare-and-set of a branch head: ``b_session``, ``b_branch``, ``b_expected`` (the head read).
MOVE_HEAD = update(branches).where(
    branches.c.session_id == bindparam("b_session"),
    branches.c.id == bindparam("b_branch"),
    branches.c.head_id == bindparam("b_expected"),
)
#: The same for a branch that has no head yet.
MOVE_EMPTY_HEAD = update(branches).where(
    branches.c.session_id == bindparam("b_session"),
    branches.c.id == bindparam("b_branch"),
    branches.c.head_id.is_(None),
)
#: ``b_session``; SET ``update_time``.
TOUCH_SESSION = update(sessions).where(sessions.c.id == bindparam("b_session"))

#: A growing reply's counts: ``b_id``, only while IN_PROGRESS.
CHECKPOINT = update(messages).where(
    messages.c.id == bindparam("b_id"), messages.c.status == MessageStatus.IN_PROGRESS.value
)
#: A reply's final state: ``b_id``, only if it is not finished yet.
FINISH_MESSAGE = update(messages).where(messages.c.id == bindparam("b_id"), messages.c.status.in_(UNFINISHED))
#: The run's usage record: ``b_run``.
FINISH_USAGE = update(usage_records).where(usage_records.c.message_id == bindparam("b_run"))
#: The run's row: ``b_run``.
FINISH_RUN = update(runs).where(runs.c.id == bindparam("b_run"))
