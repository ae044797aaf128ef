"""voice-to-voice latency of live conversation replies

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-13 00:00:00

- messages.voice_to_voice_latency_s: replies in a live conversation (ChatService.Converse),
  seconds from the end of the user's speech to the reply's first audio chunk. Nullable: other
  messages have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("voice_to_voice_latency_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("voice_to_voice_latency_s")
