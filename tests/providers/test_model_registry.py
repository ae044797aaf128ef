"""Model settings and the registry built from them: aliases, providers switched on by settings."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence

import pytest
from parley.config import Settings
from parley.domain.errors import InvalidArgument
from parley.providers.llm.base import ChatTurn, GenerationRequest, ProviderEvent
from parley.providers.llm.bedrock import BedrockProvider
from parley.providers.llm.bedrock_agent import BedrockAgentProvider
from parley.providers.llm.factory import build_model_registry
from parley.providers.llm.openai import OpenAIChatProvider
from pydantic import ValidationError
from pydantic_settings import SettingsError


class Embedded:
    """Takes the local model's place: the registry only stores and names it."""

    name = "local"

    def context_window(self, model: str) -> int:
        return 2048

    def supports_tools(self, model: str) -> bool:
        return False

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        return 0

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        return
        yield

    async def close(self) -> None:
        pass


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def test_defaults_keep_local_working_and_nothing_else() -> None:
    registry = build_model_registry(_settings(), Embedded(), local_model_id="smollm2-135m-instruct")
    resolved = registry.resolve("local")
    assert (resolved.provider.name, resolved.model) == ("local", "smollm2-135m-instruct")
    assert registry.resolve("").qualified_name == "local/smollm2-135m-instruct"  # the default model
    assert registry.known() == ["local", "local/<model>"]
    for name in ("openai/gpt-4o-mini", "bedrock/amazon.nova-lite-v1:0", "groq/llama-3.1-8b-instant"):
        with pytest.raises(InvalidArgument) as caught:
            registry.resolve(name, field="agent.model")
        assert caught.value.reason == "UNKNOWN_MODEL"
        assert caught.value.metadata["known"] == "local,local/<model>"
    with pytest.raises(InvalidArgument, match="PARLEY_BEDROCK_REGION"):
        registry.resolve("bedrock/amazon.nova-lite-v1:0")
    await registry.close()


async def test_settings_switch_providers_on_and_aliases_point_at_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv(
        "PARLEY_OPENAI_COMPATIBLE",
        json.dumps({"groq": {"base_url": "https://api.groq.com/openai/v1", "api_key": "gsk-test"}}),
    )
    monkeypatch.setenv("PARLEY_BEDROCK_REGION", "eu-west-1")
    monkeypatch.setenv(
        "PARLEY_MODEL_ALIASES",
        json.dumps({"fast": "groq/llama-3.1-8b-instant", "smart": "bedrock/eu.amazon.nova-pro-v1:0"}),
    )
    monkeypatch.setenv("PARLEY_MODEL_CONTEXT_WINDOWS", json.dumps({"openai/my-finetune": 16384}))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.enabled_providers == ["local", "openai", "bedrock", "bedrock-agent", "groq"]
    registry = build_model_registry(settings, Embedded(), local_model_id="smollm2")
    fast = registry.resolve("fast")
    assert (
        isinstance(fast.provider, OpenAIChatProvider) and fast.qualified_name == "groq/llama-3.1-8b-instant"
    )
    assert fast.provider.context_window(fast.model) == 131_072
    smart = registry.resolve("smart")
    assert isinstance(smart.provider, BedrockProvider) and smart.model == "eu.amazon.nova-pro-v1:0"
    assert smart.provider.context_window(smart.model) == 300_000
    mine = registry.resolve("openai/my-finetune")
    assert mine.provider.name == "openai" and mine.provider.context_window(mine.model) == 16384
    assert registry.known() == ["fast", "local", "smart"] + [
        f"{p}/<model>" for p in ("bedrock", "bedrock-agent", "groq", "local", "openai")
    ]
    agent = registry.resolve("bedrock-agent/AGENT12345/TSTALIASID")
    assert isinstance(agent.provider, BedrockAgentProvider) and agent.model == "AGENT12345/TSTALIASID"
    await registry.close()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model_aliases": {"fast": "groq/llama"}}, "not enabled"),
        ({"model_aliases": {"fast": "no-slash"}}, "must name a provider/model"),
        ({"model_aliases": {"a/b": "local/x"}}, "must name a provider/model"),
        ({"openai_compatible": {"openai": {"base_url": "http://x/v1"}}}, "not one of"),
        ({"openai_compatible": {"Bad Name": {"base_url": "http://x/v1"}}}, "lowercase"),
        ({"openai_compatible": {"groq": {"base_url": "ftp://x"}}}, "base_url"),
        ({"model_context_windows": {"gpt-4o": 128000}}, "provider/model"),
        ({"model_context_windows": {"openai/x": 10}}, "at least 256"),
    ],
)
def test_bad_model_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(**values)


def test_malformed_json_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_MODEL_ALIASES", "{fast: groq}")
    with pytest.raises(SettingsError, match="model_aliases"):
        Settings(_env_file=None)  # type: ignore[call-arg]
