"""What hosted-model providers share: a stated token estimate and a table of context windows.

Parley has no tokenizer for hosted models (their tokenizers are not all public, and one per
model would be a heavy dependency), so prompt sizes are *estimated*, the way OpenAI's cookbook
("How to count tokens", and the help-centre rule "one token is about 4 characters of English")
does it:

* each message costs ``ceil(utf8_bytes / 4)`` tokens for its content plus
  :data:`TOKENS_PER_MESSAGE` (role and delimiters), and every prompt costs
  :data:`TOKENS_PER_REPLY` more (the reply is primed with ``<|start|>assistant<|message|>``);
* bytes rather than characters: for English they are the same, while Arabic letters take two
  bytes each, which counts Arabic at about two characters per token, nearer to what BPE
  tokenizers produce for it than four.

Estimates decide what history fits the context window; the stored ``usage`` comes from the
provider's own count whenever it reports one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from parley.providers.llm.base import ChatTurn

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "KNOWN_CONTEXT_WINDOWS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_REPLY",
    "context_window_for",
    "estimate_text_tokens",
    "estimate_tokens",
]

#: Per-message overhead, tokens (OpenAI cookbook: 3 for current chat models; 4 for older ones).
TOKENS_PER_MESSAGE = 4
#: Every reply is primed with a few tokens (OpenAI cookbook: 3).
TOKENS_PER_REPLY = 3
#: Context window (tokens) of a model that is neither in the table nor configured.
DEFAULT_CONTEXT_WINDOW = 8192

#: Context windows (tokens, prompt + output) from the providers' model pages, matched as the
#: longest prefix of the model id (so dated versions such as ``gpt-4o-2024-08-06`` match).
#: Bedrock ids are matched without their cross-region prefix (``us.``, ``eu.`` ...).
KNOWN_CONTEXT_WINDOWS: Mapping[str, int] = {
    # OpenAI (platform.openai.com/docs/models)
    "gpt-3.5-turbo": 16_385,
    "gpt-4-turbo": 128_000,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    # Groq (console.groq.com/docs/models)
    "llama-3.1-8b-instant": 131_072,
    "llama-3.3-70b-versatile": 131_072,
    # Bedrock (docs.aws.amazon.com/bedrock, model cards)
    "anthropic.claude-3": 200_000,
    "anthropic.claude-sonnet-4": 200_000,
    "anthropic.claude-opus-4": 200_000,
    "amazon.nova-micro": 128_000,
    "amazon.nova-lite": 300_000,
    "amazon.nova-pro": 300_000,
    "meta.llama3-1": 128_000,
    "meta.llama3-3": 128_000,
}

_BEDROCK_REGION_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.")


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of ``text``: a quarter of its UTF-8 bytes, rounded up."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def estimate_tokens(turns: Sequence[ChatTurn]) -> int:
    """Estimated prompt tokens of ``turns`` (see the module docstring for the rule)."""
    return sum(TOKENS_PER_MESSAGE + estimate_text_tokens(t.content) for t in turns) + TOKENS_PER_REPLY


def context_window_for(provider: str, model: str, overrides: Mapping[str, int]) -> int:
    """The context window of ``provider/model``, tokens.

    ``overrides`` (``PARLEY_MODEL_CONTEXT_WINDOWS``, keyed by ``provider/model``) win; then the
    longest prefix in :data:`KNOWN_CONTEXT_WINDOWS`; then :data:`DEFAULT_CONTEXT_WINDOW`.
    """
    configured = overrides.get(f"{provider}/{model}")
    if configured is not None:
        return configured
    key = model.lower()
    for prefix in _BEDROCK_REGION_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    matches = [name for name in KNOWN_CONTEXT_WINDOWS if key.startswith(name)]
    return KNOWN_CONTEXT_WINDOWS[max(matches, key=len)] if matches else DEFAULT_CONTEXT_WINDOW
