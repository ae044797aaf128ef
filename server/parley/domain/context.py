"""The LLM context window: instructions plus the newest messages that fit the token budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from parley.domain.errors import InvalidArgument, Reason
from parley.domain.models import Message, MessageStatus, Role
from parley.providers.llm.base import ChatTurn, LLMProvider, ToolCallRequest

__all__ = ["ContextPlan", "build_context", "counting", "plan_context"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def counting(provider: LLMProvider, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args, **kwargs)``, a step that counts tokens with ``provider``: on the event loop,
    or in a worker thread where the provider's ``count_tokens`` blocks (``count_tokens_blocks``:
    the local model asks its engine process)."""
    if getattr(provider, "count_tokens_blocks", False):
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """A chosen prompt: ``turns`` (oldest first) costing ``input_tokens``, and the usable older
    messages that did not fit (``dropped``, oldest first; failed replies are never usable)."""

    turns: list[ChatTurn]
    input_tokens: int
    dropped: Sequence[Message]


def build_context(
    provider: LLMProvider, model: str, instructions: str, history: Sequence[Message], max_output_tokens: int
) -> tuple[list[ChatTurn], int]:
    """Choose the prompt for a reply to ``history[-1]`` (the new user message).

    The budget is the model's context window minus ``max_output_tokens`` (docs/design.md,
    "Conversation model"). The instructions and the newest message always go in; older
    messages are added newest-first while the whole prompt, counted with the provider's
    tokenizer, fits. Failed replies (no text) are skipped. Returns the turns (oldest first)
    and their token count.

    Raises ``InvalidArgument`` (``CONTEXT_WINDOW_EXCEEDED``) when the instructions plus the
    newest message alone do not fit.
    """
    plan = plan_context(provider, model, instructions, history, max_output_tokens)
    return plan.turns, plan.input_tokens


def plan_context(
    provider: LLMProvider,
    model: str,
    instructions: str,
    history: Sequence[Message],
    max_output_tokens: int,
    *,
    reserve_tokens: int = 0,
    history_share: float = 1.0,
) -> ContextPlan:
    """:func:`build_context`, also saying which messages were left out.

    ``reserve_tokens`` is kept free on top of ``max_output_tokens`` (room for a summary);
    ``history_share`` (0-1] is the part of the remaining budget older messages may fill (the
    newest message always goes in). Raises ``InvalidArgument`` (``CONTEXT_WINDOW_EXCEEDED``) when
    the instructions plus the newest message do not fit the budget.
    """
    window = provider.context_window(model)
    budget = window - max_output_tokens - reserve_tokens
    system = [ChatTurn("system", instructions)] if instructions else []
    units = _units(history)
    usable = [m for unit in units for m in unit[0]]
    groups = [unit[1] for unit in units]
    newest = groups[-1] if groups else []
    base = provider.count_tokens(model, [*system, *newest])
    if base > budget:
        raise InvalidArgument(
            f"the message and the agent's instructions need {base} tokens; the model takes {budget} "
            f"(context window {window} minus max_output_tokens {max_output_tokens})",
            reason=Reason.CONTEXT_WINDOW_EXCEEDED,
            metadata={"input_tokens": str(base), "budget": str(budget)},
        )
    fill = base + int((budget - base) * history_share)
    # Grow backwards, whole units at a time (a tool step with its results is one unit), with
    # per-unit estimates; then confirm with one exact count.
    chosen: list[list[ChatTurn]] = [newest]
    total = base
    for group in reversed(groups[:-1]):
        cost = provider.count_tokens(model, group)
        if total + cost > fill:
            break
        chosen.insert(0, group)
        total += cost
    prompt = [*system, *(t for g in chosen for t in g)]
    exact = provider.count_tokens(model, prompt)
    while exact > budget and len(chosen) > 1:
        chosen.pop(0)
        prompt = [*system, *(t for g in chosen for t in g)]
        exact = provider.count_tokens(model, prompt)
    kept = sum(len(unit[0]) for unit in units[len(units) - len(chosen) :])
    return ContextPlan(prompt, exact, usable[: len(usable) - kept])


def _units(history: Sequence[Message]) -> list[tuple[list[Message], list[ChatTurn]]]:
    """The history as units the context keeps or drops whole: a user message; an assistant
    message; or an assistant message's tool calls with their results (calls left unanswered, by a
    reply cut short while it waited, are dropped: providers refuse a call without its result).
    Failed replies (no text, no calls) are left out."""
    units: list[tuple[list[Message], list[ChatTurn]]] = []
    results = {m.tool_call_id: m for m in history if m.role is Role.TOOL}
    for message in history:
        if message.role is Role.USER:
            if message.text:
                units.append(([message], [ChatTurn("user", message.text)]))
        elif message.role is Role.ASSISTANT:
            answered = tuple(c for c in message.tool_calls if c.id in results)
            if not answered:
                if message.text and message.status is not MessageStatus.FAILED:
                    units.append(([message], [ChatTurn("assistant", message.text)]))
                continue
            calls = tuple(ToolCallRequest(c.id, c.name, c.arguments) for c in answered)
            turns = [ChatTurn("assistant", message.text, tool_calls=calls)]
            members = [message]
            for call in answered:
                result = results[call.id]
                members.append(result)
                turns.append(ChatTurn("tool", result.text, tool_call_id=call.id))
            units.append((members, turns))
    return units
