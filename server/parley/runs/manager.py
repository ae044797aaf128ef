"""Runs: a reply is produced by a server-side task; the RPC that started it only subscribes.

The :class:`RunManager` owns every run of this process: it drives the run's body (the provider
call, and for voice the speech synthesis), appends each event to the run's event log, writes
checkpoints of the reply while it grows, stores the final reply, and answers subscribers,
cancels and shutdown (docs/design.md, "Runs"):

- A subscriber reads the log from any sequence number, then live events, until the terminal
  event. When the last subscriber of a run started without ``background`` goes away before the
  end, the run is cancelled (stop reason CANCELLED, or DEADLINE_EXCEEDED when the subscriber's
  RPC deadline passed).
- :meth:`RunManager.cancel` stops a run within about one token of the provider (the provider
  stream is closed); the partial reply is stored INCOMPLETE and the log ends with ``usage`` and
  ``message_completed``.
- While a run is generating, its reply is checkpointed every ``checkpoint_interval_s`` seconds
  (``PARLEY_RUN_CHECKPOINT_SECONDS``, 1 s) when its text changed, so a crash loses at most that
  much text (runs/sweep.py marks such replies INCOMPLETE).
- On shutdown, runs get the grace period to finish, then are stopped with stop reason SHUTDOWN.
- The final reply is stored with ``generation_duration_s``: seconds from the start of the run's
  task to the reply being stored, just before the run's last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import FailedPrecondition, ParleyError, Reason
from parley.domain.models import Message, StopReason
from parley.runs.events import ActionRequired, Completed, Failed, RunEvent, Sequenced, ToolInputs, UsageReport
from parley.runs.log import RunEventLog
from parley.runs.signals import LocalRunSignals, RunSignals
from parley.storage.messages import MessageStore
from parley.telemetry import genai, metrics

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["DEADLINE_SLACK_S", "PausingBody", "RunBody", "RunManager", "RunSpec", "Subscription"]

log = logging.getLogger(__name__)

#: A subscriber that leaves this close to its RPC deadline left because of the deadline (the
#: client's and the server's clocks for it differ by the network latency).
DEADLINE_SLACK_S = 0.25


class RunBody(Protocol):
    """What a run executes: the domain's reply (text, or text and speech)."""

    def events(self) -> AsyncIterator[RunEvent]:
        """The run's events: ``Accepted`` first, ``Completed`` (the final reply) last. Closing the
        iterator early must stop the provider promptly."""
        ...

    def progress(self) -> Message:
        """The reply as generated so far (status IN_PROGRESS), for checkpoints."""
        ...

    def cut_short(self, reason: StopReason, detail: str) -> Message:
        """The reply stopped now for ``reason``: INCOMPLETE with its text, or FAILED without."""
        ...

    def spent(self) -> tuple[int, int]:
        """Input and output tokens of every model call of the run so far."""
        ...


class PausingBody(RunBody, Protocol):
    """A body that can wait for the client (tool outputs, approvals): it yields an
    ``ActionRequired`` event, then waits for :meth:`accept`."""

    def accept(self, inputs: ToolInputs) -> None:
        """Take what the run waits for. Raises ``InvalidArgument`` (UNKNOWN_TOOL_CALL) for ids it
        does not wait for or pending ids left out, ``FailedPrecondition`` (REPLY_NOT_WAITING)
        when it waits for nothing; changes nothing then."""
        ...


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Who a run belongs to. ``finish`` is called once when the run ends, with the reply as
    stored (``None`` if it could not be stored): it gives back the admission ticket and settles
    the quota."""

    run_id: str
    owner_id: str
    session_id: str
    branch_id: str
    background: bool
    finish: Callable[[Message | None], None]


class _Run:
    __slots__ = (
        "began",
        "body",
        "done",
        "ended",
        "final",
        "last_sequence_number",
        "outcome",
        "paused_at",
        "spec",
        "started",
        "stop_reason",
        "subscribers",
        "task",
    )

    def __init__(self, spec: RunSpec, body: RunBody) -> None:
        self.spec = spec
        self.body = body
        self.subscribers = 0
        self.stop_reason: StopReason | None = None
        self.started = False
        #: ``time.monotonic()`` when the run's task started (the origin of generation_duration).
        self.began = time.monotonic()
        self.last_sequence_number = 0
        self.final: Message | None = None
        #: The reply as the run last tried to store it (stored or not), for the metrics.
        self.outcome: Message | None = None
        #: Sequence number of the ActionRequired event the run waits at (None: not waiting).
        self.paused_at: int | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        #: The final reply is stored and its last event appended: nothing can stop it any more.
        self.ended = False

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is not None or self.done.done() or self.ended:
            return
        self.stop_reason = reason
        if self.started and self.task is not None:
            self.task.cancel()


class Subscription:
    """An async iterator of a run's ``Sequenced`` events; close it (``aclose``) when done."""

    def __init__(
        self,
        source: Callable[[], Awaitable[AsyncIterator[Sequenced] | None]],
        on_close: Callable[[], None] | None = None,
        *,
        ends_after: Callable[[Sequenced], bool] | None = None,
    ) -> None:
        self._source = source
        self._events: AsyncIterator[Sequenced] | None = None
        self._on_close = on_close
        self._ends_after = ends_after
        self._ended = False
        self._closed = False

    @classmethod
    def of(cls, events: AsyncIterator[Sequenced]) -> Subscription:
        """A subscription to events already at hand (a finished run's log, a replay)."""

        async def source() -> AsyncIterator[Sequenced]:
            return events

        return cls(source)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Sequenced:
        if self._closed or self._ended:
            raise StopAsyncIteration
        if self._events is None:
            self._events = await self._source()
            if self._events is None:
                raise StopAsyncIteration
        item = await anext(self._events)
        if self._ends_after is not None and self._ends_after(item):
            self._ended = True  # the run waits for the client: this stream ends here
        return item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._on_close is not None:
                self._on_close()


class RunManager:
    """Starts, follows, cancels and stops this process's runs (see the module docstring).

    Args:
        messages: where checkpoints and final replies are written.
        events: the run event log.
        checkpoint_interval_s: seconds between checkpoints of a growing reply.
        signals: how the other replicas are told to stop runs of deleted sessions and users.
    """

    def __init__(
        self,
        messages: MessageStore,
        events: RunEventLog,
        *,
        checkpoint_interval_s: float = 1.0,
        signals: RunSignals | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._messages = messages
        self._log = events
        self._signals = signals or LocalRunSignals()
        self._interval = checkpoint_interval_s
        self._now = clock
        self._live: dict[str, _Run] = {}
        self.shutting_down = False

    # --- starting and following ----------------------------------------------------------------

    def start(self, spec: RunSpec, body: RunBody, *, deadline: float | None = None) -> Subscription:
        """Start a run; returns the starting RPC's subscription (from the first event)."""
        run = _Run(spec, body)
        self._live[spec.run_id] = run
        self._log.open(spec.run_id)
        subscription = self._attach(run, 0, deadline)
        run.task = asyncio.create_task(self._drive(run), name=f"run {spec.run_id}")
        return subscription

    async def follow(self, run_id: str, after: int, *, deadline: float | None = None) -> Subscription | None:
        """The events of run ``run_id`` after sequence number ``after``, then live ones; ``None``
        when the run is neither live here nor in the log (evicted, or never here)."""
        run = self._live.get(run_id)
        if run is not None:
            return self._attach(run, after, deadline)
        events = await self._log.read(run_id, after)
        return None if events is None else Subscription.of(events)

    def is_live(self, run_id: str) -> bool:
        return run_id in self._live

    def live_runs(self) -> int:
        return len(self._live)

    def _attach(self, run: _Run, after: int, deadline: float | None) -> Subscription:
        run.subscribers += 1

        async def source() -> AsyncIterator[Sequenced] | None:
            return await self._log.read(run.spec.run_id, after)

        def ends_after(item: Sequenced) -> bool:
            return isinstance(item.event, ActionRequired) and run.paused_at == item.sequence_number

        return Subscription(source, lambda: self._detach(run, deadline), ends_after=ends_after)

    async def resume(self, run_id: str, inputs: ToolInputs, *, deadline: float | None = None) -> Subscription:
        """Give a waiting run what it waits for and follow the rest of its events. Raises as
        :meth:`accept`."""
        after = self.accept(run_id, inputs)
        return self._attach(self._live[run_id], after, deadline)

    def accept(self, run_id: str, inputs: ToolInputs) -> int:
        """Give a waiting run what it waits for; returns the sequence number of the pause (follow
        the run after it). Raises ``FailedPrecondition`` (REPLY_NOT_WAITING) when run ``run_id``
        is not waiting here, and what the body's ``accept`` raises for wrong inputs (nothing
        changes then)."""
        run = self._live.get(run_id)
        accept = getattr(run.body, "accept", None) if run is not None else None
        if run is None or run.paused_at is None or accept is None:
            raise FailedPrecondition(
                "the reply is not waiting for tool outputs or approvals", reason=Reason.REPLY_NOT_WAITING
            )
        accept(inputs)
        after, run.paused_at = run.paused_at, None
        return after

    def waiting_on(self, session_id: str, branch_id: str) -> str | None:
        """The run waiting for the client on this branch, if any (its id)."""
        for run in self._live.values():
            if run.spec.session_id == session_id and run.spec.branch_id == branch_id and run.paused_at:
                return run.spec.run_id
        return None

    def _detach(self, run: _Run, deadline: float | None) -> None:
        run.subscribers -= 1
        if run.subscribers > 0 or run.spec.background or run.done.done() or self.shutting_down:
            return
        if run.paused_at is not None:  # the client left on purpose: it answers with SubmitToolOutputs
            return
        past_deadline = deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK_S
        run.stop(StopReason.DEADLINE_EXCEEDED if past_deadline else StopReason.CANCELLED)

    # --- stopping ------------------------------------------------------------------------------

    async def cancel(self, run_id: str, reason: StopReason = StopReason.CANCELLED) -> bool:
        """Stop run ``run_id`` and wait until its reply is stored; False if it is not live here."""
        run = self._live.get(run_id)
        if run is None:
            return False
        run.stop(reason)
        await asyncio.shield(run.done)
        return True

    async def cancel_session(self, session_id: str) -> None:
        """Stop every run of a session (it is being deleted): here, waiting until their replies
        are stored, and on the other replicas (runs/signals.py)."""
        await self._signals.cancel_everywhere(session_id=session_id)
        await self.cancel_session_here(session_id)

    async def cancel_owner(self, owner_id: str) -> None:
        """Stop every run of a user (the user is being deleted), here and on other replicas."""
        await self._signals.cancel_everywhere(owner_id=owner_id)
        await self.cancel_owner_here(owner_id)

    async def cancel_session_here(self, session_id: str) -> None:
        """Stop every live run of a session in this process."""
        await self._cancel_where(lambda spec: spec.session_id == session_id)

    async def cancel_owner_here(self, owner_id: str) -> None:
        """Stop every live run of a user in this process."""
        await self._cancel_where(lambda spec: spec.owner_id == owner_id)

    async def _cancel_where(self, match: Callable[[RunSpec], bool]) -> None:
        runs = [r for r in self._live.values() if match(r.spec)]
        for run in runs:
            run.stop(StopReason.CANCELLED)
        if runs:
            await asyncio.wait([asyncio.shield(r.done) for r in runs])

    async def shutdown(self, grace_s: float, *, store_timeout_s: float = 5.0) -> None:
        """Let runs finish for ``grace_s`` seconds, then stop the rest (SHUTDOWN) and wait up to
        ``store_timeout_s`` for their replies to be stored."""
        self.shutting_down = True
        pending = [r.done for r in self._live.values()]
        if pending and grace_s > 0:
            await asyncio.wait(pending, timeout=grace_s)
        for run in list(self._live.values()):
            run.stop(StopReason.SHUTDOWN)
        pending = [r.done for r in self._live.values()]
        if pending:
            await asyncio.wait(pending, timeout=store_timeout_s)

    # --- the run itself ------------------------------------------------------------------------

    async def _drive(self, run: _Run) -> None:
        metrics.RUNS_ACTIVE.inc()
        with genai.run_span(run.spec.run_id, run.spec.session_id) as span:
            try:
                await self._drive_body(run)
            finally:
                metrics.RUNS_ACTIVE.dec()
                _record(run, span)

    async def _drive_body(self, run: _Run) -> None:
        checkpoints = _Checkpoints(self._messages, run.body, self._interval)
        try:
            try:
                run.started, run.began = True, time.monotonic()
                if run.stop_reason is not None:  # stopped before it started
                    raise asyncio.CancelledError
                async with contextlib.aclosing(run.body.events()) as events:  # type: ignore[type-var]
                    async for event in events:
                        if isinstance(event, Completed):
                            await checkpoints.stop()
                            final = await self._store(run, event.message, run.last_sequence_number + 1)
                            await self._append(run, Completed(final))
                            run.ended = True
                        else:
                            await self._append(run, event)
                        if isinstance(event, ActionRequired):
                            run.paused_at = run.last_sequence_number
            except asyncio.CancelledError:
                if run.ended:  # cancelled while its body closed, after its last event: done
                    return
                reason = run.stop_reason or (
                    StopReason.SHUTDOWN if self.shutting_down else StopReason.CANCELLED
                )
                await asyncio.shield(self._end_cut_short(run, checkpoints, reason))
            except ParleyError as exc:
                await asyncio.shield(self._end_failed(run, checkpoints, exc))
            except Exception as exc:
                log.exception("run %s failed", run.spec.run_id)
                error = ParleyError(f"generation failed: {type(exc).__name__}")
                await asyncio.shield(self._end_failed(run, checkpoints, error))
        finally:
            checkpoints.close()
            self._live.pop(run.spec.run_id, None)
            run.spec.finish(run.final)
            if not run.done.done():
                run.done.set_result(None)

    async def _end_cut_short(self, run: _Run, checkpoints: _Checkpoints, reason: StopReason) -> None:
        await checkpoints.stop()
        message = run.body.cut_short(reason, reason.value.replace("_", " "))
        message = await self._store(run, message, run.last_sequence_number + 2)
        await self._append(run, UsageReport(message.input_tokens, message.output_tokens))
        await self._append(run, Completed(message))

    async def _end_failed(self, run: _Run, checkpoints: _Checkpoints, error: ParleyError) -> None:
        await checkpoints.stop()
        message = run.body.cut_short(StopReason.ERROR, error.message)
        await self._store(run, message, run.last_sequence_number + 1)
        await self._append(run, Failed(error))

    async def _append(self, run: _Run, event: RunEvent) -> None:
        run.last_sequence_number = await self._log.append(run.spec.run_id, event)

    async def _store(self, run: _Run, message: Message, last_sequence_number: int) -> Message:
        """Store the final ``message`` with its generation duration; returns it as stored."""
        run.paused_at = None
        message = replace(message, generation_duration_s=time.monotonic() - run.began)
        run.outcome = message
        try:
            stored = await self._messages.finish_reply(
                message, last_sequence_number, self._now(), spent=run.body.spent()
            )
            if stored:
                run.final = message
            else:
                log.warning("reply %s was already finished or deleted; final state not stored", message.id)
        except Exception:
            log.exception("could not store the reply %s", message.id)
        return message


def _record(run: _Run, span: Span) -> None:
    """The ended run's metrics (``parley.telemetry.metrics.run_finished``) and span attributes."""
    outcome = run.final or run.outcome
    input_tokens, output_tokens = run.body.spent()
    status = outcome.status.value if outcome is not None else ""
    stop_reason = outcome.stop_reason.value if outcome is not None else ""
    metrics.run_finished(
        status=status,
        stop_reason=stop_reason,
        model=outcome.model if outcome is not None else "",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        time_to_first_token_s=outcome.time_to_first_token_s if outcome is not None else None,
    )
    if span.is_recording():
        span.set_attribute("parley.reply.status", status or "unknown")
        span.set_attribute("parley.reply.stop_reason", stop_reason or "none")
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if stop_reason == StopReason.ERROR.value:  # not a cancel, a deadline or a shutdown
            genai.mark_error(span, "error")


class _Checkpoints:
    """Writes ``body.progress()`` every ``interval`` seconds while it changes; :meth:`stop` waits
    for a write in flight, so a checkpoint never lands after the final reply."""

    def __init__(self, messages: MessageStore, body: RunBody, interval: float) -> None:
        self._messages = messages
        self._body = body
        self._interval = interval
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        written = (0, 0)
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval)
            if self._stopped.is_set():
                return
            snapshot = self._body.progress()
            key = (len(snapshot.text), snapshot.output_tokens)
            if key == written:
                continue
            try:
                await self._messages.checkpoint(snapshot)
                written = key
            except Exception as exc:
                log.warning("checkpoint of reply %s failed: %s", snapshot.id, exc)

    async def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(BaseException):
            await asyncio.shield(self._task)

    def close(self) -> None:
        self._stopped.set()
