"""Context memory: a running summary of the history that no longer fits (``PARLEY_CONTEXT_SUMMARY``).

When the newest messages that fit the budget leave older ones out, the older part is summarized
by the same model and the summary goes into the system turn (after the agent's instructions)::

    <instructions>

    Summary of the earlier conversation (those messages are not shown):
    <summary>

How it stays cheap:

* a summary is cached per session and *cut* (the newest message it covers; ``SummaryStore``);
* a new cut keeps only the newest messages that fill *half* of the history budget, so the next
  sends reuse the same cut (and summary) until the kept part outgrows the budget again: one
  summary per several sends, not one per send;
* a new summary is made from the previous one plus the messages between the two cuts (a
  *running* summary), so each message is summarized once.

Room for the summary (``summary_tokens``: an eighth of the window, at most 256 tokens) is kept
free when a cut is chosen, and the summary is generated with that many output tokens at most.
Only the messages read for the context (the newest 200) can be summarized. If summarizing fails
(provider down), the reply goes on with plain trimming.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from parley.domain.clock import Clock, utc_now
from parley.domain.context import ContextPlan, counting, plan_context
from parley.domain.errors import InvalidArgument, ParleyError
from parley.domain.models import Message, Role
from parley.providers.llm.base import ChatTurn, GenerationRequest, TextDeltaEvent
from parley.providers.llm.registry import ResolvedModel
from parley.storage.summaries import Summary, SummaryStore

__all__ = ["SUMMARY_INSTRUCTIONS", "ContextSummarizer", "summary_tokens", "with_summary"]

log = logging.getLogger(__name__)

SUMMARY_INSTRUCTIONS = (
    "You keep a running summary of a conversation for an assistant that will continue it. "
    "Keep names, facts, numbers, decisions and open questions; drop greetings and filler. "
    "Write a few short sentences in the language of the conversation. Output only the summary."
)
#: Temperature of summaries: low, they should be faithful rather than creative.
SUMMARY_TEMPERATURE = 0.2


def summary_tokens(context_window: int) -> int:
    """Room kept for the summary: an eighth of the window, at most 256 tokens."""
    return min(256, context_window // 8)


def with_summary(instructions: str, summary: str) -> str:
    """The system text: the agent's instructions, then the summary note."""
    note = f"Summary of the earlier conversation (those messages are not shown):\n{summary}"
    return f"{instructions}\n\n{note}" if instructions else note


class ContextSummarizer:
    """Builds contexts that carry a running summary of what was trimmed (see the module docstring)."""

    def __init__(self, store: SummaryStore, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._now = clock

    async def build_context(
        self,
        resolved: ResolvedModel,
        session_id: str,
        instructions: str,
        history: Sequence[Message],
        max_output_tokens: int,
    ) -> tuple[list[ChatTurn], int]:
        """Like :func:`parley.domain.context.build_context` (same errors), plus the summary."""
        provider, model = resolved.provider, resolved.model
        plain = await counting(
            provider, plan_context, provider, model, instructions, history, max_output_tokens
        )
        earlier = [m.id for m in history[:-1]]
        cached = await self._store.newest(session_id, earlier)
        if cached is not None:  # reuse the cut while what follows it still fits
            reused = await counting(
                provider, self._after_cut, resolved, instructions, history, max_output_tokens, cached
            )
            if reused is not None and not reused.dropped:
                return reused.turns, reused.input_tokens
        if not plain.dropped:
            return plain.turns, plain.input_tokens

        reserve = summary_tokens(provider.context_window(model))
        try:
            cut_plan = await counting(
                provider,
                plan_context,
                provider,
                model,
                instructions,
                history,
                max_output_tokens,
                reserve_tokens=reserve,
                history_share=0.5,
            )
        except InvalidArgument:  # the newest message leaves no room for a summary
            return plain.turns, plain.input_tokens
        cut = cut_plan.dropped[-1]
        new = list(cut_plan.dropped)
        previous = ""
        if cached is not None and cached.message_id in {m.id for m in new}:
            start = [m.id for m in new].index(cached.message_id) + 1
            new, previous = new[start:], cached.text
        text = await self._summarize(resolved, previous, new, reserve)
        if not text:
            return plain.turns, plain.input_tokens
        summary = Summary(session_id, cut.id, text, resolved.qualified_name, self._now())
        await self._store.put(summary)
        final = await counting(
            provider, self._after_cut, resolved, instructions, history, max_output_tokens, summary
        )
        if final is None:
            return plain.turns, plain.input_tokens
        return final.turns, final.input_tokens

    def _after_cut(
        self,
        resolved: ResolvedModel,
        instructions: str,
        history: Sequence[Message],
        max_output_tokens: int,
        summary: Summary,
    ) -> ContextPlan | None:
        """The plan for the messages after ``summary``'s cut, with the summary in the system turn."""
        ids = [m.id for m in history]
        if summary.message_id not in ids:
            return None
        rest = history[ids.index(summary.message_id) + 1 :]
        try:
            return plan_context(
                resolved.provider,
                resolved.model,
                with_summary(instructions, summary.text),
                rest,
                max_output_tokens,
            )
        except InvalidArgument:
            return None

    async def _summarize(
        self, resolved: ResolvedModel, previous: str, messages: Sequence[Message], max_tokens: int
    ) -> str:
        """The updated summary (``""`` if the model fails): ``previous`` plus ``messages``."""
        provider, model = resolved.provider, resolved.model
        room = provider.context_window(model) - max_tokens
        lines = [f"{'User' if m.role is Role.USER else 'Assistant'}: {m.text}" for m in messages]
        while True:
            parts = [f"Summary so far:\n{previous}"] if previous else []
            parts += ["New messages:\n" + "\n".join(lines), "Write the updated summary."]
            turns = [ChatTurn("system", SUMMARY_INSTRUCTIONS), ChatTurn("user", "\n\n".join(parts))]
            if await counting(provider, provider.count_tokens, model, turns) <= room or len(lines) <= 1:
                break
            lines.pop(0)  # the oldest new lines go first when the window is too small for all
        request = GenerationRequest(model, turns, max_tokens, SUMMARY_TEMPERATURE)
        pieces: list[str] = []
        try:
            async for event in provider.stream(request):
                if isinstance(event, TextDeltaEvent):
                    pieces.append(event.text)
        except ParleyError as exc:
            log.warning(
                "could not summarize trimmed history with %s: %s", resolved.qualified_name, exc.message
            )
            return ""
        return "".join(pieces).strip()
