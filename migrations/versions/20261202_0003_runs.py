"""runs: replies as server-side runs (runs, replicas); branch columns named as in the domain

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:10:00

- ``runs``: one row per reply's run (owner replica while it runs, last sequence number);
- ``replicas``: live server processes and their heartbeats (the lease on their runs);
- ``branches``: ``head_message_id`` → ``head_id``, ``fork_message_id`` → ``fork_point_id``,
  ``head_depth`` → ``message_count`` (= depth + 1), the names of ``parley.domain.models.Branch``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("branches") as batch:
        batch.alter_column("head_message_id", new_column_name="head_id")
        batch.alter_column("fork_message_id", new_column_name="fork_point_id")
        batch.add_column(sa.Column("message_count", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE branches SET message_count = head_depth + 1")
    with op.batch_alter_table("branches") as batch:
        batch.drop_column("head_depth")
        batch.alter_column("message_count", server_default=None)

    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("branch_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("replica_id", sa.String(length=36), nullable=True),
        sa.Column("background", sa.Boolean(), nullable=False),
        sa.Column("last_sequence_number", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["id"], ["messages.id"], name=op.f("fk_runs_id_messages"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_runs_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_replica_id"), "runs", ["replica_id"], unique=False)
    op.create_index(op.f("ix_runs_session_id"), "runs", ["session_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_session_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_replica_id"), table_name="runs")
    op.drop_table("runs")
    op.drop_table("replicas")
    with op.batch_alter_table("branches") as batch:
        batch.add_column(sa.Column("head_depth", sa.Integer(), nullable=False, server_default="-1"))
    op.execute("UPDATE branches SET head_depth = message_count - 1")
    with op.batch_alter_table("branches") as batch:
        batch.drop_column("message_count")
        batch.alter_column("head_id", new_column_name="head_message_id")
        batch.alter_column("fork_point_id", new_column_name="fork_message_id")
        batch.alter_column("head_depth", server_default=None)
