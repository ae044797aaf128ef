"""Build the model registry from settings: the local model plus every hosted provider switched on.

=================  ====================================================================
provider           switched on by
=================  ====================================================================
``local``          always (the embedded GGUF model)
``openai``         ``PARLEY_OPENAI_API_KEY`` (and ``PARLEY_OPENAI_BASE_URL``)
``<name>``         each entry of ``PARLEY_OPENAI_COMPATIBLE`` (``groq``, ``vllm`` ...)
``bedrock``        ``PARLEY_BEDROCK_REGION`` (credentials: the standard AWS chain)
``bedrock-agent``  ``PARLEY_BEDROCK_REGION`` too (models ``bedrock-agent/{agent}/{alias}``)
=================  ====================================================================

Aliases: ``local`` → ``local/<model id>`` is built in; ``PARLEY_MODEL_ALIASES`` adds more (or
redefines ``local``). An agent's ``model`` is an alias or ``provider/model``.
"""

from __future__ import annotations

from parley.config import Settings
from parley.providers.llm.base import LLMProvider
from parley.providers.llm.registry import ModelRegistry

__all__ = ["build_model_registry"]


def build_model_registry(settings: Settings, local: LLMProvider, *, local_model_id: str) -> ModelRegistry:
    """The registry of ``local`` and the hosted providers ``settings`` enable.

    Creating a hosted provider opens no connection (clients connect on first use), so a provider
    that is down shows only when an agent uses it (``UNAVAILABLE``, reason
    ``PROVIDER_UNAVAILABLE``).
    """
    providers: dict[str, LLMProvider] = {"local": local}
    retries, timeout_s = settings.provider_max_retries, settings.provider_timeout_seconds
    windows = settings.model_context_windows
    if settings.openai_api_key is not None or settings.openai_compatible:
        from parley.providers.llm.openai import OpenAIChatProvider

        if settings.openai_api_key is not None:
            providers["openai"] = OpenAIChatProvider(
                "openai",
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key.get_secret_value(),
                max_retries=retries,
                timeout_s=timeout_s,
                context_windows=windows,
            )
        for name, endpoint in settings.openai_compatible.items():
            providers[name] = OpenAIChatProvider(
                name,
                base_url=endpoint.base_url,
                api_key=endpoint.api_key.get_secret_value(),
                max_retries=retries,
                timeout_s=timeout_s,
                context_windows=windows,
            )
    if settings.bedrock_region:
        from parley.providers.llm.bedrock import BedrockProvider

        providers["bedrock"] = BedrockProvider(
            settings.bedrock_region, max_retries=retries, timeout_s=timeout_s, context_windows=windows
        )
        from parley.providers.llm.bedrock_agent import BedrockAgentProvider

        providers["bedrock-agent"] = BedrockAgentProvider(
            settings.bedrock_region,
            memory=settings.bedrock_agent_memory,
            max_retries=retries,
            timeout_s=timeout_s,
            context_windows=windows,
        )
    aliases = {"local": f"local/{local_model_id}", **settings.model_aliases}
    return ModelRegistry(providers, aliases, settings.default_model)
