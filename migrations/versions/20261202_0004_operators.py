"""operators: user roles, disabling and quotas; usage records; run-time settings; speech seconds

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:00:00

An existing database gets its oldest user as admin (the first user registered is the admin on a
new database), so that an upgraded install is not left without one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(length=16), server_default="user", nullable=False))
        batch.add_column(sa.Column("disable_time", sa.DateTime(timezone=True), nullable=True))
        for name in ("input_tokens_per_day", "output_tokens_per_day", "audio_seconds_per_day"):
            batch.add_column(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("max_concurrent_replies", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE users SET role = 'admin' WHERE id = (SELECT id FROM users ORDER BY create_time, id LIMIT 1)"
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("speech_duration_s", sa.Float(), nullable=True))
    op.create_table(
        "usage_records",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("audio_input_s", sa.Float(), nullable=False),
        sa.Column("audio_output_s", sa.Float(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_usage_records_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_usage_records")),
    )
    op.create_index(op.f("ix_usage_records_agent_id"), "usage_records", ["agent_id"], unique=False)
    op.create_index(op.f("ix_usage_records_session_id"), "usage_records", ["session_id"], unique=False)
    op.create_index("ix_usage_records_user_id_create_time", "usage_records", ["user_id", "create_time"])
    op.create_table(
        "server_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_settings")),
    )


def downgrade() -> None:
    op.drop_table("server_settings")
    op.drop_index("ix_usage_records_user_id_create_time", table_name="usage_records")
    op.drop_index(op.f("ix_usage_records_session_id"), table_name="usage_records")
    op.drop_index(op.f("ix_usage_records_agent_id"), table_name="usage_records")
    op.drop_table("usage_records")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("speech_duration_s")
    with op.batch_alter_table("users") as batch:
        for name in (
            "max_concurrent_replies",
            "audio_seconds_per_day",
            "output_tokens_per_day",
            "input_tokens_per_day",
            "disable_time",
            "role",
        ):
            batch.drop_column(name)
