"""Crash safety: this process's lease on its runs, and the sweep of runs no live process owns.

Each server process is a *replica* with a row in ``replicas`` that it refreshes every
``lease_s / 3`` seconds (``PARLEY_RUN_LEASE_SECONDS``, default 15 s). Every run records the
replica running it. A replica that dies (``kill -9``, a crash, a lost machine) stops
refreshing; once its lease has expired, any replica's sweep (every ``lease_s / 3`` seconds, and
at start-up) marks its unfinished replies INCOMPLETE with stop reason SERVER_LOST, keeping the
text of their last checkpoint (FAILED when there was none). No message stays IN_PROGRESS for
longer than the lease plus one sweep interval after its process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import replace
from datetime import timedelta

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import Reason, Unavailable
from parley.domain.models import Message, MessageStatus, StopReason
from parley.domain.names import new_id
from parley.storage.messages import MessageStore
from parley.storage.sql.replicas import ReplicaStore

__all__ = ["SERVER_LOST_DETAIL", "RunSweeper"]

log = logging.getLogger(__name__)

SERVER_LOST_DETAIL = "the server writing this reply stopped before it finished"


class RunSweeper:
    """Holds this replica's lease and sweeps orphaned runs (see the module docstring).

    Args:
        lease_s: seconds without a heartbeat after which a replica counts as dead.
    """

    def __init__(
        self, replicas: ReplicaStore, messages: MessageStore, *, lease_s: float, clock: Clock = utc_now
    ) -> None:
        self._replicas = replicas
        self._messages = messages
        self._lease = lease_s
        self._now = clock
        self.replica_id = new_id()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register this replica, sweep once, then heartbeat and sweep in the background."""
        await self._replicas.register(self.replica_id, socket.gethostname(), os.getpid(), self._now())
        await self.sweep()
        self._task = asyncio.create_task(self._loop(), name="run sweeper")

    async def stop(self) -> None:
        """Stop heartbeating and remove this replica's row (its runs are stored by then)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._replicas.deregister(self.replica_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                if not await self._replicas.heartbeat(self.replica_id, self._now()):
                    log.warning("replica %s had been declared dead; registering again", self.replica_id)
                    await self._replicas.register(
                        self.replica_id, socket.gethostname(), os.getpid(), self._now()
                    )
                await self.sweep()
            except Exception as exc:
                log.warning("heartbeat or sweep failed: %s", exc)

    async def sweep(self) -> int:
        """Mark the replies of runs whose replica's lease expired; returns how many."""
        cutoff = self._now() - timedelta(seconds=self._lease)
        orphans = await self._replicas.orphaned_runs(cutoff)
        for session_id, run_id in orphans:
            unfinished = await self._messages.unfinished_of_run(session_id, run_id)
            if not unfinished:  # its messages finished (or were deleted): release the run row
                first = await self._messages.get(session_id, run_id)
                unfinished = [first] if first is not None else []
            for message in unfinished:
                await self._mark_lost(message)
        if orphans:
            log.info("swept %d run(s) left by stopped servers", len(orphans))
        await self._replicas.forget_dead(cutoff - timedelta(seconds=self._lease))
        return len(orphans)

    async def recover(self, message: Message) -> Message:
        """The stored state of an IN_PROGRESS reply that no run of this process is writing.

        If its replica's lease expired, the reply is marked lost now and returned. Raises
        ``Unavailable`` (RUN_ON_ANOTHER_REPLICA) when another live replica is writing it (following
        and cancelling it from here needs the shared run event log of the replicas setup).
        """
        if message.status not in (MessageStatus.IN_PROGRESS, MessageStatus.REQUIRES_ACTION):
            return message
        run = await self._messages.get_run(message.session_id, message.run_id or message.id)
        cutoff = self._now() - timedelta(seconds=self._lease)
        if (
            run is not None
            and run.replica_id not in (None, self.replica_id)
            and await self._replicas.is_alive(run.replica_id, cutoff)
        ):
            raise Unavailable(
                "this reply is being generated by another server process; follow or cancel it there",
                reason=Reason.RUN_ON_ANOTHER_REPLICA,
                metadata={"replica": str(run.replica_id)},
            )
        return await self._mark_lost(message)

    async def _mark_lost(self, message: Message) -> Message:
        run = await self._messages.get_run(message.session_id, message.run_id or message.id)
        if message.status not in (MessageStatus.IN_PROGRESS, MessageStatus.REQUIRES_ACTION):
            lost = message
        else:
            lost = replace(
                message,
                status=MessageStatus.INCOMPLETE if message.text else MessageStatus.FAILED,
                stop_reason=StopReason.SERVER_LOST,
                error_message=SERVER_LOST_DETAIL,
            )
        await self._messages.finish_reply(lost, run.last_sequence_number if run else 0, self._now())
        return lost
