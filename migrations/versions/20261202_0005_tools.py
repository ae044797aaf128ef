"""tools: agents' tools and MCP servers, tool steps in the message tree

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 02:00:00

- agents.tools, agents.mcp_servers: JSON lists (parley.domain.models.ToolSpec, McpServerConfig);
- messages.tool_call_id, is_error (tool messages), run_id (the run that wrote a message: its
  first assistant message; existing replies are their own run);
- message_contents.tool_calls: the calls an assistant message made (JSON).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("tools", sa.Text(), server_default="[]", nullable=False))
        batch.add_column(sa.Column("mcp_servers", sa.Text(), server_default="[]", nullable=False))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("tool_call_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("is_error", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("run_id", sa.String(length=36), nullable=True))
        batch.create_index(batch.f("ix_messages_run_id"), ["run_id"], unique=False)
    op.execute("UPDATE messages SET run_id = id WHERE role = 'assistant'")
    with op.batch_alter_table("message_contents") as batch:
        batch.add_column(sa.Column("tool_calls", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message_contents") as batch:
        batch.drop_column("tool_calls")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index(batch.f("ix_messages_run_id"))
        batch.drop_column("run_id")
        batch.drop_column("is_error")
        batch.drop_column("tool_call_id")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("mcp_servers")
        batch.drop_column("tools")
