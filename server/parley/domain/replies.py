"""Replies already started: follow (ResumeStream), stop (CancelMessage), answer a waiting one
(SubmitToolOutputs). A reply is named by any assistant message of its run; the run is found
through ``Message.run_id`` (its first assistant message).

A run lives on the replica that started it. From another replica (with Redis), a resume reads
the shared event log, and a cancel or a submit is signalled to the run's replica
(runs/signals.py); followers there do not keep a foreground run alive (only the sender's own
stream does).
"""

from __future__ import annotations

import asyncio
import time

from parley.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Reason, Unavailable
from parley.domain.models import Message, MessageStatus, Role
from parley.domain.names import message_name
from parley.runs.events import ToolInputs
from parley.runs.manager import RunManager, Subscription
from parley.runs.replay import replay_stored
from parley.runs.signals import LocalRunSignals, RunSignals
from parley.runs.sweep import RunSweeper
from parley.storage.messages import MessageStore
from parley.storage.sql.sessions import SessionStore

__all__ = ["LOG_WAIT_S", "Replies", "assistant_message", "replayed"]

#: How long a resume on one replica waits for the first events of a run just started on another
#: to reach the shared log (seconds).
LOG_WAIT_S = 1.0


async def assistant_message(messages: MessageStore, session_id: str, message_id: str) -> Message:
    """The assistant message ``message_id``; ``NotFound`` if absent, ``InvalidArgument``
    (NOT_AN_ASSISTANT_MESSAGE) for a user or tool message."""
    message = await messages.get(session_id, message_id)
    if message is None:
        raise NotFound.resource(message_name(session_id, message_id))
    if message.role is not Role.ASSISTANT or message.parent_id is None:
        raise InvalidArgument.field(
            "name",
            "not an assistant message: replies are regenerated, resumed and cancelled; to edit a "
            "user message, fork at its parent (CreateBranch) and send the new text to that branch",
            reason=Reason.NOT_AN_ASSISTANT_MESSAGE,
        )
    return message


async def replayed(messages: MessageStore, reply: Message, after: int) -> Subscription:
    """The stream of a finished run rebuilt from what is stored (runs/replay.py): its user
    message and its last assistant message."""
    run_id = reply.run_id or reply.id
    run = await messages.get_run(reply.session_id, run_id)
    first = reply if reply.id == run_id else await messages.get(reply.session_id, run_id)
    last = await messages.last_of_run(reply.session_id, run_id) or reply
    user = await messages.get(reply.session_id, (first or reply).parent_id or "")
    if user is None:
        raise NotFound.resource(message_name(reply.session_id, reply.id))
    branch_id = run.branch_id if run else ""
    events = replay_stored(user, last, branch_id, run.last_sequence_number if run else 0, after)
    return Subscription.of(events)


class Replies:
    """Follow, stop and answer replies of the caller's sessions."""

    def __init__(
        self,
        sessions: SessionStore,
        messages: MessageStore,
        runs: RunManager,
        sweeper: RunSweeper,
        signals: RunSignals | None = None,
    ) -> None:
        self._sessions = sessions
        self._messages = messages
        self._runs = runs
        self._sweeper = sweeper
        self._signals = signals or LocalRunSignals()

    async def _reply(self, owner_id: str, session_id: str, message_id: str) -> Message:
        if await self._sessions.get(owner_id, session_id) is None:
            raise NotFound.resource(message_name(session_id, message_id))
        return await assistant_message(self._messages, session_id, message_id)

    async def resume(
        self, owner_id: str, session_id: str, message_id: str, starting_after: int, *, deadline: float | None
    ) -> Subscription:
        """The events of the run of reply ``message_id`` after ``starting_after``: from its event
        log then live, or replayed from the stored reply when the log is gone.

        Raises ``InvalidArgument`` for a negative ``starting_after`` or a user message,
        ``NotFound`` for a message that is absent or another user's, ``Unavailable``
        (RUN_ON_ANOTHER_REPLICA) for a reply another live server process is writing.
        """
        if starting_after < 0:
            raise InvalidArgument.field("starting_after", "must not be negative")
        reply = await self._reply(owner_id, session_id, message_id)
        run_id = reply.run_id or reply.id
        live = await self._runs.follow(run_id, starting_after, deadline=deadline)
        if live is None and self._signals.shared and await self._sweeper.owner_elsewhere(reply):
            live = await self._await_log(run_id, starting_after, deadline)
        if live is not None:
            return live
        await self._recover(reply)
        return await replayed(self._messages, reply, starting_after)

    async def cancel(self, owner_id: str, session_id: str, message_id: str) -> Message:
        """Stop the reply's run (within about a second) and return the reply as stored: its last
        assistant message, INCOMPLETE with stop reason CANCELLED, or unchanged when the run had
        already finished. Errors as :meth:`resume`."""
        reply = await self._reply(owner_id, session_id, message_id)
        run_id = reply.run_id or reply.id
        if not await self._runs.cancel(run_id):
            owner = await self._sweeper.owner_elsewhere(reply) if self._signals.shared else None
            if owner is None or not await self._signals.cancel(owner, run_id):
                await self._recover(reply)
        return await self._messages.last_of_run(session_id, run_id) or reply

    async def submit(
        self,
        owner_id: str,
        session_id: str,
        message_id: str,
        inputs: ToolInputs,
        *,
        deadline: float | None,
    ) -> Subscription:
        """Answer a reply waiting for tool outputs or approvals and follow the rest of its run.

        Raises ``NotFound`` (absent or another user's), ``InvalidArgument`` (a user message;
        UNKNOWN_TOOL_CALL for ids it does not wait for or pending ids left out),
        ``FailedPrecondition`` (REPLY_NOT_WAITING). Nothing changes when it raises.
        """
        reply = await self._reply(owner_id, session_id, message_id)
        if reply.status is not MessageStatus.REQUIRES_ACTION:
            raise FailedPrecondition(
                f"{message_name(session_id, message_id)} is not waiting for tool outputs or approvals",
                reason=Reason.REPLY_NOT_WAITING,
            )
        run_id = reply.run_id or reply.id
        if self._runs.is_live(run_id):
            return await self._runs.resume(run_id, inputs, deadline=deadline)
        owner = await self._sweeper.owner_elsewhere(reply) if self._signals.shared else None
        if owner is not None:
            after = await self._signals.submit(owner, run_id, inputs)
            live = await self._await_log(run_id, after, deadline)
            if live is None:
                raise Unavailable(
                    "the reply resumed on another server process, but its events cannot be read",
                    reason=Reason.RUN_ON_ANOTHER_REPLICA,
                )
            return live
        await self._recover(reply)  # its server is gone: the reply is stored INCOMPLETE now
        raise FailedPrecondition(
            "the reply stopped waiting (its server stopped)", reason=Reason.REPLY_NOT_WAITING
        )

    async def _await_log(self, run_id: str, after: int, deadline: float | None) -> Subscription | None:
        """Follow a run of another replica from the shared log, waiting up to ``LOG_WAIT_S`` for
        its first events to arrive there."""
        give_up = time.monotonic() + LOG_WAIT_S
        while True:
            live = await self._runs.follow(run_id, after, deadline=deadline)
            if live is not None or time.monotonic() >= give_up:
                return live
            await asyncio.sleep(0.05)

    async def _recover(self, reply: Message) -> None:
        run_id = reply.run_id or reply.id
        for message in await self._messages.unfinished_of_run(reply.session_id, run_id) or [reply]:
            await self._sweeper.recover(message)
