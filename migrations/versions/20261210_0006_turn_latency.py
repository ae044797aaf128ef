"""turn latency: first audio, generation and transcription durations of messages

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 00:00:00

- messages.time_to_first_audio_s: voice replies, seconds from the start of the run to its first
  audio chunk;
- messages.generation_duration_s: the run's final assistant message, seconds from the start of
  the run to its end;
- messages.transcription_duration_s: spoken user messages, seconds speech-to-text took.

All nullable: messages stored before this revision have none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("time_to_first_audio_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("generation_duration_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("transcription_duration_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("transcription_duration_s")
        batch.drop_column("generation_duration_s")
        batch.drop_column("time_to_first_audio_s")
