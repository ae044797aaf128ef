"""citations: the sources an assistant message cites (knowledge bases)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12 00:00:00

- message_contents.citations: a JSON list (parley.storage.content.base.MessageContent.citations);
  citations quote retrieved text, so they are content, beside the message's text.

Nullable: messages stored before this revision cite nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message_contents") as batch:
        batch.add_column(sa.Column("citations", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message_contents") as batch:
        batch.drop_column("citations")
