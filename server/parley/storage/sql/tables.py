"""SQL schema (SQLAlchemy Core tables). Alembic migrations in ``migrations/`` mirror it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import false

__all__ = [
    "agents",
    "branches",
    "message_contents",
    "messages",
    "metadata",
    "refresh_tokens",
    "replicas",
    "runs",
    "server_settings",
    "sessions",
    "summaries",
    "usage_records",
    "users",
]

# Constraint names are deterministic so that migrations can refer to them (Alembic docs,
# "The Importance of Naming Constraints").
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ID = String(36)  # UUIDv7 in canonical text form

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("update_time", UTCDateTime(), nullable=False),
    # `user` or `admin` (parley.domain.models.UserRole).
    Column("role", String(16), nullable=False, server_default="user"),
    # Set when an admin disabled the user: their tokens stop working at once.
    Column("disable_time", UTCDateTime(), nullable=True),
    # The user's own limits (parley.domain.models.Quota); 0 = the server's default.
    Column("input_tokens_per_day", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens_per_day", BigInteger, nullable=False, server_default="0"),
    Column("audio_seconds_per_day", BigInteger, nullable=False, server_default="0"),
    Column("max_concurrent_replies", Integer, nullable=False, server_default="0"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", ID, primary_key=True),  # the JWT's jti
    Column("family_id", ID, nullable=False, index=True),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("expire_time", UTCDateTime(), nullable=False),
    Column("use_time", UTCDateTime(), nullable=True),
    Column("revoke_time", UTCDateTime(), nullable=True),
)

agents = Table(
    "agents",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("instructions", Text, nullable=False),
    Column("model", String(200), nullable=False),
    Column("temperature", Float, nullable=True),
    Column("max_output_tokens", Integer, nullable=False),
    Column("voice", String(100), nullable=False),
    Column("language", String(16), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("update_time", UTCDateTime(), nullable=False),
    # JSON lists of the agent's tools and MCP servers (parley.domain.models.ToolSpec,
    # McpServerConfig), headers included: treat the database as holding secrets.
    Column("tools", Text, nullable=False, server_default="[]"),
    Column("mcp_servers", Text, nullable=False, server_default="[]"),
    Index("ix_agents_owner_id_id", "owner_id", "id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("agent_id", ID, ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("title", String(200), nullable=False),
    Column("active_branch_id", String(36), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("update_time", UTCDateTime(), nullable=False),
    # Set while the session's message content is in the archive (domain/archive.py): the object
    # key of its export file, the file's size in bytes and SHA-256 (hex), and when.
    Column("archive_key", String(1024), nullable=True),
    Column("archive_size", BigInteger, nullable=True),
    Column("archive_sha256", String(64), nullable=True),
    Column("archive_time", UTCDateTime(), nullable=True),
    # When the content last came back from the archive (idle archiving counts it as activity).
    Column("restore_time", UTCDateTime(), nullable=True),
    Index("ix_sessions_owner_id_id", "owner_id", "id"),
)

branches = Table(
    "branches",
    metadata,
    Column("session_id", ID, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("id", String(36), primary_key=True),
    Column("display_name", String(100), nullable=False),
    # The head message (NULL for an empty branch) and the number of messages on its path (the
    # head's depth + 1). No foreign key: a head moves in the same transaction as the message row
    # it points at is inserted (storage/messages.py), and SQLite cannot defer the check.
    Column("head_id", ID, nullable=True),
    Column("message_count", Integer, nullable=False, default=0),
    Column("fork_point_id", ID, nullable=True),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("update_time", UTCDateTime(), nullable=False),
)

# The message tree: structure and bookkeeping of every message, whichever store holds the
# content. Branch heads point at rows here, written in the same transaction as the head moves.
messages = Table(
    "messages",
    metadata,
    Column("id", ID, primary_key=True),
    Column("session_id", ID, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("parent_id", ID, nullable=True),
    Column("depth", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("stop_reason", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("time_to_first_token_s", Float, nullable=True),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("speech_duration_s", Float, nullable=True),
    # Tool messages: the call answered, and whether the output is an error the model was told.
    Column("tool_call_id", String(64), nullable=True),
    Column("is_error", Boolean, nullable=False, server_default=false()),
    # The run that wrote it (its first assistant message); NULL for user messages.
    Column("run_id", ID, nullable=True, index=True),
    # Latency of a turn, in seconds (docs/api.md, "Message"): voice replies' first audio, the
    # run's whole length (its final message), speech-to-text of a spoken user message.
    Column("time_to_first_audio_s", Float, nullable=True),
    Column("generation_duration_s", Float, nullable=True),
    Column("transcription_duration_s", Float, nullable=True),
    # Replies in a live conversation: seconds from the end of the user's speech to first audio.
    Column("voice_to_voice_latency_s", Float, nullable=True),
    ForeignKeyConstraint(["parent_id"], ["messages.id"], ondelete="CASCADE"),
    Index("ix_messages_session_id_request_id", "session_id", "request_id", unique=True),
    Index("ix_messages_parent_id", "parent_id"),
)

# The SQL content store (embedded default): what was said. With MongoDB configured, content
# lives there instead and this table stays empty. No foreign key: content is written before the
# tree row that makes it reachable.
message_contents = Table(
    "message_contents",
    metadata,
    Column("message_id", ID, primary_key=True),
    Column("session_id", ID, nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("transcript_language", String(16), nullable=False),
    Column("audio_duration_s", Float, nullable=True),
    Column("error_message", Text, nullable=False),
    Column("tool_calls", Text, nullable=True),  # JSON list (MessageContent.tool_calls)
    Column("citations", Text, nullable=True),  # JSON list (MessageContent.citations)
)

# Running summaries of trimmed history (PARLEY_CONTEXT_SUMMARY): one per session and cut point,
# the newest message the summary covers. A cache: deleting rows only costs a regeneration.
summaries = Table(
    "summaries",
    metadata,
    Column("session_id", ID, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("message_id", ID, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("text", Text, nullable=False),
    Column("model", String(200), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
)

# Live server processes (replicas): each one heartbeats its row; a run whose replica stopped
# heartbeating for longer than the lease (PARLEY_RUN_LEASE_SECONDS) is swept (runs/sweep.py).
replicas = Table(
    "replicas",
    metadata,
    Column("id", ID, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("start_time", UTCDateTime(), nullable=False),
    Column("heartbeat_time", UTCDateTime(), nullable=False),
)

# One row per run (a reply being, or having been, generated), keyed by its assistant message.
# ``replica_id`` is the process running it, NULL once it finished; ``last_sequence_number`` is
# the number of events its stream had, so a replay from the stored message ends on the same
# number (runs/replay.py).
runs = Table(
    "runs",
    metadata,
    Column("id", ID, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("session_id", ID, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("branch_id", String(36), nullable=False),
    Column("user_id", ID, nullable=False),
    Column("replica_id", ID, nullable=True, index=True),
    Column("background", Boolean, nullable=False),
    Column("last_sequence_number", Integer, nullable=False, default=0),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("finish_time", UTCDateTime(), nullable=True),
)

# What every reply spent (storage/sql/usage.py): written with the reply when its run starts,
# completed when it is stored. Deleted with the user, but not with the session or agent, so that
# deleting a session gives no tokens back to the day's quota.
usage_records = Table(
    "usage_records",
    metadata,
    Column("message_id", ID, primary_key=True),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("agent_id", ID, nullable=False, index=True),
    Column("session_id", ID, nullable=False, index=True),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("audio_input_s", Float, nullable=False),
    Column("audio_output_s", Float, nullable=False),
    Column("message_count", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Index("ix_usage_records_user_id_create_time", "user_id", "create_time"),
)

# Run-time settings an admin changed (AdminService.UpdateSettings): name -> JSON value.
server_settings = Table(
    "server_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("update_time", UTCDateTime(), nullable=False),
)
