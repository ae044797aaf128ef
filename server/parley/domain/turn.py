"""The tool loop: the run body of a reply by an agent with tools.

One turn is model steps until the model answers without calling tools::

    model step → tool calls → results → model step → ... → final text

Every step is in the message tree: the assistant message of a tool step keeps its text and its
``tool_calls`` (status COMPLETE, stop reason TOOL_USE), each result is a tool message, and the
next step writes a new assistant message; the run's reply is its last assistant message.

- Server tools (HTTP, MCP) run at once, one after another, unless they need an approval.
- Client tools, and server tools that need an approval, pause the run: the step's message is
  stored REQUIRES_ACTION, an ``ActionRequired`` event ends the subscribers' streams, and the run
  waits up to ``wait_s`` (``PARLEY_TOOL_WAIT_SECONDS``) for :meth:`AgentTurn.accept`
  (SubmitToolOutputs); then it ends INCOMPLETE with stop reason ACTION_EXPIRED.
- At most ``max_steps`` model calls (``PARLEY_TOOLS_MAX_STEPS``): the last one is offered no
  tools, so the model has to answer.
- Usage is the sum over the steps (``spent``); each step's message keeps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

from parley.domain.clock import Clock, utc_now
from parley.domain.errors import Aborted, FailedPrecondition, InvalidArgument, Reason
from parley.domain.models import Message, MessageStatus, Role, StopReason, ToolCall, ToolKind
from parley.domain.names import new_id
from parley.domain.reply import StreamedText, chat_call
from parley.domain.toolbox import Toolbox
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    LLMProvider,
    StopEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolCallRequest,
    ToolDefinition,
    UsageEvent,
)
from parley.runs.events import (
    Accepted,
    ActionRequired,
    Completed,
    Delta,
    RunEvent,
    ToolAnswered,
    ToolCalled,
    ToolInputs,
    UsageReport,
)
from parley.storage.messages import MessageStore
from parley.telemetry import genai
from parley.tools.base import ToolOutcome

__all__ = ["MAX_TOOL_OUTPUT_CHARS", "AgentTurn"]

#: Longest client tool output accepted (characters), 1 MiB of ASCII.
MAX_TOOL_OUTPUT_CHARS = 1024 * 1024


@dataclass
class _Wait:
    outputs: set[str]
    approvals: set[str]
    inputs: asyncio.Future[ToolInputs] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class AgentTurn:
    """A reply with tools (see the module docstring).

    Args:
        first: the reply's first assistant message as stored when the run started.
        branch_id: the branch the steps are appended to (held by the run's admission ticket).
        meter: counts each delta's ``tokens`` as output tokens (the daily quota); False stops the
            reply.
    """

    def __init__(
        self,
        accepted: Accepted,
        first: Message,
        provider: LLMProvider,
        request: GenerationRequest,
        toolbox: Toolbox,
        messages: MessageStore,
        *,
        branch_id: str,
        max_steps: int,
        wait_s: float,
        meter: Callable[[int], bool] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._accepted = accepted
        self._current = first
        self._provider = provider
        self._request = request
        self._toolbox = toolbox
        self._messages = messages
        self._branch_id = branch_id
        self._max_steps = max_steps
        self._wait_s = wait_s
        self._meter = meter
        self._now = clock
        self._text = StreamedText()
        self._spent = (0, 0)  # finished steps
        self._wait: _Wait | None = None

    # --- RunBody -------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[RunEvent]:
        yield self._accepted
        turns = list(self._request.turns)
        for step in range(1, self._max_steps + 1):
            calls: list[ToolCallRequest] = []
            tools = self._toolbox.definitions if step < self._max_steps else []
            stop = StopReason.END_TURN
            async with contextlib.aclosing(self._model_step(turns, tools, calls)) as deltas:
                async for event in deltas:
                    if isinstance(event, StopReason):
                        stop = event
                    else:
                        yield event
            if stop is StopReason.QUOTA_EXCEEDED:
                for end in self._end(self.cut_short(stop, "the daily output-token quota ran out")):
                    yield end
                return
            if calls and step == self._max_steps:  # tools were not offered, yet the model called some
                detail = f"the turn took {self._max_steps} model steps"
                for end in self._end(self.cut_short(StopReason.MAX_STEPS, detail)):
                    yield end
                return
            if not calls:
                for end in self._end(self._message(MessageStatus.COMPLETE, stop, "")):
                    yield end
                return
            async for step_event in self._tool_step(calls, turns):
                yield step_event
            if self._wait is not None:  # expired while waiting
                self._wait = None
                detail = f"no tool outputs within {self._wait_s:g} s"
                for end in self._end(self.cut_short(StopReason.ACTION_EXPIRED, detail)):
                    yield end
                return
        raise AssertionError("the last step offers no tools")  # pragma: no cover

    def _end(self, final: Message) -> tuple[UsageReport, Completed]:
        """The last two events of the turn: what it spent, and its reply."""
        return UsageReport(*self.spent()), Completed(final)

    def progress(self) -> Message:
        status = (
            MessageStatus.REQUIRES_ACTION
            if self._current.status is MessageStatus.REQUIRES_ACTION
            else MessageStatus.IN_PROGRESS
        )
        return self._message(status, self._current.stop_reason, "")

    def cut_short(self, reason: StopReason, detail: str) -> Message:
        generated = self._text.parts or self._current.text
        status = MessageStatus.INCOMPLETE if generated else MessageStatus.FAILED
        return self._message(status, reason, detail)

    def spent(self) -> tuple[int, int]:
        step_in, step_out = self._text.tokens(self._current.input_tokens)
        return self._spent[0] + step_in, self._spent[1] + step_out

    def accept(self, inputs: ToolInputs) -> None:
        """Take the outputs and approvals the run waits for (all of them at once)."""
        wait = self._wait
        if wait is None or wait.inputs.done():
            raise FailedPrecondition(
                "the reply is not waiting for tool outputs", reason=Reason.REPLY_NOT_WAITING
            )
        unknown = (set(inputs.outputs) - wait.outputs) | (set(inputs.approvals) - wait.approvals)
        missing = (wait.outputs - set(inputs.outputs)) | (wait.approvals - set(inputs.approvals))
        if unknown or missing:
            raise InvalidArgument(
                "tool outputs must answer exactly the pending calls"
                + (f"; not pending: {', '.join(sorted(unknown))}" if unknown else "")
                + (f"; missing: {', '.join(sorted(missing))}" if missing else ""),
                reason=Reason.UNKNOWN_TOOL_CALL,
                metadata={"unknown": ",".join(sorted(unknown)), "missing": ",".join(sorted(missing))},
            )
        for call_id, (output, _) in inputs.outputs.items():
            if len(output) > MAX_TOOL_OUTPUT_CHARS:
                raise InvalidArgument.field(
                    "tool_outputs.output", f"{call_id}: at most {MAX_TOOL_OUTPUT_CHARS} characters"
                )
        wait.inputs.set_result(inputs)

    # --- steps ---------------------------------------------------------------------------------

    async def _model_step(
        self,
        turns: list[ChatTurn],
        tools: list[ToolDefinition],
        calls: list[ToolCallRequest],
    ) -> AsyncGenerator[Delta | StopReason, None]:
        """One model call: its deltas, and its stop reason last (as a bare ``StopReason``)."""
        self._text.started = time.monotonic()
        request = replace(self._request, turns=tuple(turns), tools=tuple(tools))
        stop = StopReason.END_TURN
        call = chat_call(self._provider.name, request)
        stream = self._provider.stream(request)
        try:
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if isinstance(event, TextDeltaEvent):
                        if self._meter is not None and not self._meter(event.tokens):
                            stop = StopReason.QUOTA_EXCEEDED
                            break
                        self._text.add(event.text, event.tokens)
                        yield Delta(event.text)
                    elif isinstance(event, ToolCallEvent):
                        calls.append(event.call)
                    elif isinstance(event, UsageEvent):
                        self._text.usage = (event.input_tokens, event.output_tokens)
                    elif isinstance(event, StopEvent):
                        stop = event.stop_reason
                        self._text.citations = tuple(event.citations)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.finished(stop.value or StopReason.END_TURN.value, *self._text.tokens(self._current.input_tokens))
        if stop is StopReason.QUOTA_EXCEEDED:
            yield stop
            return
        yield StopReason.END_TURN if calls else (stop or StopReason.END_TURN)

    async def _tool_step(
        self, requests: list[ToolCallRequest], turns: list[ChatTurn]
    ) -> AsyncIterator[RunEvent]:
        calls = [self._toolbox.call(r.id or f"call_{new_id()}", r.name, r.arguments) for r in requests]
        step = replace(
            self._message(MessageStatus.COMPLETE, StopReason.TOOL_USE, ""), tool_calls=tuple(calls)
        )
        for call in calls:
            yield ToolCalled(step.session_id, step.id, call)
        outcomes: dict[str, ToolOutcome] = {}
        for call in calls:
            if (
                call.kind in (ToolKind.HTTP, ToolKind.MCP) and not call.require_approval
            ) or call.kind is ToolKind.UNKNOWN:
                outcomes[call.id] = await self._run_tool(call)
        pending_outputs = tuple(c for c in calls if c.kind is ToolKind.CLIENT)
        pending_approvals = tuple(
            c for c in calls if c.kind in (ToolKind.HTTP, ToolKind.MCP) and c.require_approval
        )
        if pending_outputs or pending_approvals:
            self._current = replace(step, status=MessageStatus.REQUIRES_ACTION)
            await self._messages.store_step(self._current)
            wait = self._wait = _Wait({c.id for c in pending_outputs}, {c.id for c in pending_approvals})
            expire = self._now() + timedelta(seconds=self._wait_s)
            yield ActionRequired(step.session_id, step.id, pending_outputs, pending_approvals, expire)
            try:
                inputs = await asyncio.wait_for(asyncio.shield(wait.inputs), self._wait_s)
            except TimeoutError:
                return  # events() ends the turn ACTION_EXPIRED (self._wait stays set)
            self._wait = None
            by_id = {c.id: c for c in calls}
            for call_id, (approved, reason) in inputs.approvals.items():
                outcomes[call_id] = (
                    await self._run_tool(by_id[call_id])
                    if approved
                    else ToolOutcome(
                        "the user denied this call" + (f": {reason}" if reason else ""), is_error=True
                    )
                )
            for call_id, (output, is_error) in inputs.outputs.items():
                outcomes[call_id] = ToolOutcome(output, is_error)
        self._current = step
        await self._messages.store_step(step)
        head = step
        for call in calls:
            outcome = outcomes[call.id]
            result = self._tool_message(head, call, outcome)
            await self._append(result, head)
            head = result
            yield ToolAnswered(step.session_id, call.id, outcome.output, outcome.is_error, result.id)
        turns.append(ChatTurn("assistant", step.text, tool_calls=tuple(requests)))
        turns.extend(ChatTurn("tool", outcomes[c.id].output, tool_call_id=c.id) for c in calls)
        self._next_step(head, turns)
        await self._append(self._current, head)

    async def _run_tool(self, call: ToolCall) -> ToolOutcome:
        """Run a server tool, in its ``execute_tool`` span."""
        with genai.tool_span(call.name, call.id, call.kind.value) as span:
            outcome = await self._toolbox.run(call)
            if outcome.is_error:
                genai.mark_error(span, "tool_error")
            return outcome

    def _next_step(self, parent: Message, turns: list[ChatTurn]) -> None:
        step_in, step_out = self._text.tokens(self._current.input_tokens)
        self._spent = (self._spent[0] + step_in, self._spent[1] + step_out)
        prompt = self._provider.count_tokens(self._request.model, turns)
        self._current = replace(
            self._current,
            id=new_id(),
            parent_id=parent.id,
            depth=parent.depth + 1,
            text="",
            status=MessageStatus.IN_PROGRESS,
            stop_reason=StopReason.NONE,
            input_tokens=prompt,
            output_tokens=0,
            tool_calls=(),
            citations=(),
            time_to_first_token_s=None,
            create_time=self._now(),
        )
        self._text = StreamedText()

    def _tool_message(self, parent: Message, call: ToolCall, outcome: ToolOutcome) -> Message:
        return Message(
            id=new_id(),
            session_id=parent.session_id,
            parent_id=parent.id,
            depth=parent.depth + 1,
            role=Role.TOOL,
            text=outcome.output,
            status=MessageStatus.COMPLETE,
            stop_reason=StopReason.NONE,
            model="",
            input_tokens=0,
            output_tokens=0,
            create_time=self._now(),
            tool_call_id=call.id,
            is_error=outcome.is_error,
            run_id=self._current.run_id,
        )

    async def _append(self, message: Message, parent: Message) -> None:
        if not await self._messages.append(message, self._branch_id, parent.id):
            raise Aborted("the branch moved during the reply", reason=Reason.BRANCH_CONFLICT)

    def _message(self, status: MessageStatus, stop_reason: StopReason, detail: str) -> Message:
        return self._text.applied_to(self._current, status, stop_reason, detail)
