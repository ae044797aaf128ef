"""Model registry: aliases (``local``) and ``provider/model`` names → a provider and its model id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from parley.domain.errors import InvalidArgument, Reason
from parley.providers.llm.base import LLMProvider

__all__ = ["ModelRegistry", "ResolvedModel"]


#: Why a built-in provider may be missing: the setting that switches it on.
_ENABLED_BY = {
    "openai": " (the openai provider is off: set PARLEY_OPENAI_API_KEY)",
    "bedrock": " (the bedrock provider is off: set PARLEY_BEDROCK_REGION)",
    "bedrock-agent": " (the bedrock-agent provider is off: set PARLEY_BEDROCK_REGION)",
}


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    provider: LLMProvider
    model: str

    @property
    def qualified_name(self) -> str:
        """``provider/model``, as stored on messages."""
        return f"{self.provider.name}/{self.model}"


class ModelRegistry:
    """Resolves an agent's ``model`` string.

    ``aliases`` maps short names to ``provider/model``; ``providers`` maps provider names to
    instances (see ``factory.py`` for how settings build them). Unknown names, and providers
    that are not switched on, are ``InvalidArgument`` (reason ``UNKNOWN_MODEL``) listing the
    known aliases and providers.
    """

    def __init__(
        self, providers: Mapping[str, LLMProvider], aliases: Mapping[str, str], default: str
    ) -> None:
        self._providers = dict(providers)
        self._aliases = dict(aliases)
        self.default = default

    def known(self) -> list[str]:
        return sorted(self._aliases) + [f"{p}/<model>" for p in sorted(self._providers)]

    def resolve(self, name: str, *, field: str = "model") -> ResolvedModel:
        target = self._aliases.get(name or self.default, name or self.default)
        provider_name, sep, model = target.partition("/")
        provider = self._providers.get(provider_name)
        if not sep or not model or provider is None:
            hint = _ENABLED_BY.get(provider_name, "") if sep and model else ""
            raise InvalidArgument(
                f"{field}: unknown model {name!r}{hint}; known: {', '.join(self.known())}",
                reason=Reason.UNKNOWN_MODEL,
                metadata={"field": field, "model": name, "known": ",".join(self.known())},
            )
        return ResolvedModel(provider, model)

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
