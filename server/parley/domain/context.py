"""The LLM context window: instructions plus the newest messages that fit the token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parley.domain.errors import InvalidArgument, Reason
from parley.domain.models import Message, MessageStatus, Role
from parley.providers.llm.base import ChatTurn, LLMProvider

__all__ = ["ContextPlan", "build_context", "plan_context"]


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
    usable = [m for m in history if m.status is not MessageStatus.FAILED and m.text]
    turns = [_turn(m) for m in usable]
    newest = turns[-1:]
    base = provider.count_tokens(model, [*system, *newest])
    if base > budget:
        raise InvalidArgument(
            f"the message and the agent's instructions need {base} tokens; the model takes {budget} "
            f"(context window {window} minus max_output_tokens {max_output_tokens})",
            reason=Reason.CONTEXT_WINDOW_EXCEEDED,
            metadata={"input_tokens": str(base), "budget": str(budget)},
        )
    fill = base + int((budget - base) * history_share)
    # Grow backwards with per-message estimates, then confirm with one exact count.
    chosen: list[ChatTurn] = list(newest)
    total = base
    for turn in reversed(turns[:-1]):
        cost = provider.count_tokens(model, [turn])
        if total + cost > fill:
            break
        chosen.insert(0, turn)
        total += cost
    prompt = [*system, *chosen]
    exact = provider.count_tokens(model, prompt)
    while exact > budget and len(chosen) > 1:
        chosen.pop(0)
        prompt = [*system, *chosen]
        exact = provider.count_tokens(model, prompt)
    return ContextPlan(prompt, exact, usable[: len(usable) - len(chosen)])


def _turn(message: Message) -> ChatTurn:
    return ChatTurn("user" if message.role is Role.USER else "assistant", message.text)
