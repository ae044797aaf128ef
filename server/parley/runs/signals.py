"""Signals between replicas: cancel a run, or answer a waiting one, where it runs.

A run lives in the process that started it (runs/manager.py). A call that reaches another
replica (CancelMessage, SubmitToolOutputs; deleting a session or a user) asks the run's
replica through :class:`RunSignals`:

- :class:`LocalRunSignals`, the embedded default: there is no other replica to ask;
- :class:`RedisRunSignals`: Redis pub/sub. Every replica subscribes to its own channel
  ``parley:replica:{replica_id}`` (cancel and submit for one run: the run row names its
  replica) and to ``parley:replicas`` (stop every run of a session or of a user). A submit waits
  for the owner's answer on a list (``BLPOP``), so wrong tool outputs are refused with the same
  error as on the owner, and nothing changes then.

Pub/sub delivers at most once: a signal sent while the owner's subscription is reconnecting is
lost. A cancel that got no answer is reported as such (the caller then reads the stored reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.domain.errors import ParleyError, Reason, Unavailable
from parley.domain.names import new_id
from parley.runs.codec import decode_error, encode_error
from parley.runs.events import ToolInputs

__all__ = ["BROADCAST_CHANNEL", "LocalRunSignals", "RedisRunSignals", "RunSignals", "SignalHandler"]

log = logging.getLogger(__name__)

#: The channel every replica listens to.
BROADCAST_CHANNEL = "parley:replicas"


def replica_channel(replica_id: str) -> str:
    """The channel of one replica."""
    return f"parley:replica:{replica_id}"


class SignalHandler(Protocol):
    """What a replica does with signals for its runs (the run manager)."""

    async def cancel(self, run_id: str) -> bool: ...

    def accept(self, run_id: str, inputs: ToolInputs) -> int:
        """Give a waiting run its inputs; returns the sequence number to follow after."""
        ...

    async def cancel_session_here(self, session_id: str) -> None: ...

    async def cancel_owner_here(self, owner_id: str) -> None: ...


class RunSignals(Protocol):
    """Asks other replicas to act on their runs."""

    @property
    def shared(self) -> bool:
        """Whether other replicas can be reached at all."""
        ...

    async def start(self, replica_id: str, handler: SignalHandler) -> None: ...

    async def cancel(self, replica_id: str, run_id: str) -> bool:
        """Ask ``replica_id`` to stop ``run_id`` and wait for its answer (True: it stopped it)."""
        ...

    async def submit(self, replica_id: str, run_id: str, inputs: ToolInputs) -> int:
        """Give ``run_id`` on ``replica_id`` its tool outputs; returns the sequence number to
        follow after. Raises what the owner's ``accept`` raised, or ``Unavailable``."""
        ...

    async def cancel_everywhere(self, *, session_id: str = "", owner_id: str = "") -> None:
        """Ask every replica to stop the runs of a session or of a user (no answer awaited)."""
        ...

    async def close(self) -> None: ...


class LocalRunSignals:
    """One process: no other replica to signal."""

    shared = False

    async def start(self, replica_id: str, handler: SignalHandler) -> None:
        return None

    async def cancel(self, replica_id: str, run_id: str) -> bool:
        return False

    async def submit(self, replica_id: str, run_id: str, inputs: ToolInputs) -> int:
        raise Unavailable(
            "the reply is being written by another server process", reason=Reason.RUN_ON_ANOTHER_REPLICA
        )

    async def cancel_everywhere(self, *, session_id: str = "", owner_id: str = "") -> None:
        return None

    async def close(self) -> None:
        return None


class _Signal(msgspec.Struct, frozen=True):
    op: str  # "cancel" | "submit" | "cancel_session" | "cancel_owner"
    target: str  # a run, session or user id
    reply_to: str = ""
    inputs: ToolInputs | None = None


class _Answer(msgspec.Struct, frozen=True):
    ok: bool
    value: int = 0
    error: bytes = b""


class RedisRunSignals:
    """``RunSignals`` over Redis pub/sub (see the module docstring).

    Args:
        answer_timeout_s: how long a cancel or submit waits for the owner's answer.
    """

    shared = True

    def __init__(self, redis: Redis, *, answer_timeout_s: float = 5.0) -> None:
        self._redis = redis
        self._timeout = answer_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._handler: SignalHandler | None = None
        self._handling: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    async def start(self, replica_id: str, handler: SignalHandler) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._listen(replica_id), name="run signals")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=self._timeout)

    async def cancel(self, replica_id: str, run_id: str) -> bool:
        answer = await self._ask(replica_id, _Signal("cancel", run_id))
        return answer is not None and answer.ok and bool(answer.value)

    async def submit(self, replica_id: str, run_id: str, inputs: ToolInputs) -> int:
        answer = await self._ask(replica_id, _Signal("submit", run_id, inputs=inputs))
        if answer is None:
            raise Unavailable(
                "the server process writing this reply did not answer", reason=Reason.RUN_ON_ANOTHER_REPLICA
            )
        if not answer.ok:
            raise decode_error(answer.error)
        return answer.value

    async def cancel_everywhere(self, *, session_id: str = "", owner_id: str = "") -> None:
        signal = _Signal("cancel_session", session_id) if session_id else _Signal("cancel_owner", owner_id)
        try:
            await self._redis.publish(BROADCAST_CHANNEL, msgspec.msgpack.encode(signal))
        except RedisError as exc:
            log.warning("could not ask other replicas to stop runs: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _ask(self, replica_id: str, signal: _Signal) -> _Answer | None:
        reply_to = f"parley:answer:{new_id()}"
        signal = msgspec.structs.replace(signal, reply_to=reply_to)
        try:
            listeners = await self._redis.publish(replica_channel(replica_id), msgspec.msgpack.encode(signal))
            if not listeners:
                return None
            popped = await self._redis.blpop([reply_to], timeout=self._timeout)
        except RedisError as exc:
            raise Unavailable(f"Redis: {exc}", reason=Reason.REDIS_UNAVAILABLE) from exc
        if popped is None:
            return None
        data = popped[1]
        return msgspec.msgpack.decode(data.encode() if isinstance(data, str) else data, type=_Answer)

    async def _listen(self, replica_id: str) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(replica_channel(replica_id), BROADCAST_CHANNEL)
                self.connected.set()
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        task = asyncio.create_task(self._handle(message["data"]))
                        self._handling.add(task)
                        task.add_done_callback(self._handling.discard)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
                raise
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("run signals: Redis subscription lost (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _handle(self, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            signal = msgspec.msgpack.decode(data, type=_Signal)
        except msgspec.DecodeError:
            log.warning("run signals: ignored a malformed signal")
            return
        try:
            if signal.op == "cancel_session":
                await handler.cancel_session_here(signal.target)
                return
            if signal.op == "cancel_owner":
                await handler.cancel_owner_here(signal.target)
                return
            if signal.op == "cancel":
                answer = _Answer(True, int(await handler.cancel(signal.target)))
            elif signal.op == "submit" and signal.inputs is not None:
                try:
                    answer = _Answer(True, handler.accept(signal.target, signal.inputs))
                except ParleyError as exc:
                    answer = _Answer(False, error=encode_error(exc))
            else:
                return
            if signal.reply_to:
                pipe = self._redis.pipeline(transaction=False)
                pipe.rpush(signal.reply_to, msgspec.msgpack.encode(answer))
                pipe.expire(signal.reply_to, 30)
                await pipe.execute()
        except Exception:
            log.exception("run signals: handling %s for %s failed", signal.op, signal.target)
