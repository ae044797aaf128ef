"""A finished reply's stream rebuilt from the stored messages, for when its event log is gone.

The replay is ``Accepted`` (sequence number 1), one ``Delta`` with the whole text (2), ``UsageReport``
and ``Completed``; the last two keep the sequence numbers they had in the original stream when
it is known (``runs.last_sequence_number``), so a client that resumes after the Nth event of a
long-gone stream still ends on the same ``message_completed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from parley.domain.models import Message
from parley.runs.events import Accepted, Completed, Delta, RunEvent, Sequenced, UsageReport

__all__ = ["replay_stored"]

#: Events of a replay: accepted, delta, usage, completed.
REPLAY_EVENTS = 4


def replay_stored(
    user: Message, reply: Message | None, branch_id: str, last_sequence_number: int, after: int
) -> AsyncIterator[Sequenced]:
    """The replay of ``reply`` to ``user`` (see the module docstring), events after ``after``.
    Without a reply (none was stored) it is ``Accepted`` alone."""
    events: list[tuple[int, RunEvent]] = []
    if reply is None:
        events.append((1, Accepted(user, "", branch_id)))
    else:
        last = max(last_sequence_number, REPLAY_EVENTS)
        events.append((1, Accepted(user, reply.id, branch_id)))
        if reply.text:
            events.append((2, Delta(reply.text)))
        events.append((last - 1, UsageReport(reply.input_tokens, reply.output_tokens)))
        events.append((last, Completed(reply)))
    return _iterate([Sequenced(n, e) for n, e in events if n > after])


async def _iterate(items: list[Sequenced]) -> AsyncIterator[Sequenced]:
    for item in items:
        yield item
