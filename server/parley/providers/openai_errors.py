"""One translation of ``openai`` SDK exceptions into Parley's errors, for every OpenAI-based provider.

Used by the chat (``providers/llm/openai.py``), transcription (``providers/stt/openai.py``) and
speech (``providers/tts/openai.py``) providers, so a rate limit or an outage reads the same
whichever endpoint hit it.
"""

from __future__ import annotations

import openai

from parley.domain.errors import InvalidArgument, ParleyError, Reason, ResourceExhausted, Unavailable

__all__ = ["map_openai_error"]

#: HTTP statuses that mean "this input is not acceptable" rather than "the provider is broken".
_INPUT_REJECTED_STATUSES = frozenset({400, 413, 415, 422})


def map_openai_error(exc: openai.OpenAIError, *, provider: str = "openai") -> ParleyError:
    """Translate an ``openai`` SDK exception into Parley's error vocabulary.

    * ``RateLimitError`` (HTTP 429) → ``ResourceExhausted``, reason ``PROVIDER_RATE_LIMITED``;
    * ``APIConnectionError`` / ``APITimeoutError`` and HTTP 5xx → ``Unavailable``, reason
      ``PROVIDER_UNAVAILABLE``;
    * HTTP 400/413/415/422 → ``InvalidArgument``, reason ``PROVIDER_REJECTED_INPUT``;
    * anything else (401/403 bad key, 404 unknown model, an error event inside a stream …) →
      ``Unavailable``, reason ``PROVIDER_ERROR``: a server-side configuration problem or a
      provider fault, not the caller's fault.

    ``metadata["provider"]`` is ``provider`` (the registry name: ``openai``, ``groq`` …); HTTP
    errors add ``metadata["status"]``. Messages never include the API key (the SDK does not put
    it in exceptions).
    """
    metadata = {"provider": provider}
    if isinstance(exc, openai.RateLimitError):
        return ResourceExhausted(
            f"{provider} rate limit reached; retry later",
            reason=Reason.PROVIDER_RATE_LIMITED,
            metadata=metadata | {"status": "429"},
        )
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return Unavailable(
            f"{provider} cannot be reached", reason=Reason.PROVIDER_UNAVAILABLE, metadata=metadata
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        metadata |= {"status": str(status)}
        if status >= 500:
            return Unavailable(
                f"{provider} failed (HTTP {status})", reason=Reason.PROVIDER_UNAVAILABLE, metadata=metadata
            )
        if status in _INPUT_REJECTED_STATUSES:
            return InvalidArgument(
                f"{provider} rejected the input (HTTP {status})",
                reason=Reason.PROVIDER_REJECTED_INPUT,
                metadata=metadata,
            )
        return Unavailable(
            f"{provider} refused the request (HTTP {status})", reason=Reason.PROVIDER_ERROR, metadata=metadata
        )
    return Unavailable(
        f"{provider} failed: {type(exc).__name__}", reason=Reason.PROVIDER_ERROR, metadata=metadata
    )
