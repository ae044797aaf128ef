"""session archive: where an archived session's export file lives

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12 04:00:00

- sessions.archive_key, archive_size, archive_sha256, archive_time: set while the session's
  message content is in the archive (SessionService.ArchiveSession; domain/archive.py), NULL
  otherwise;
- sessions.restore_time: when its content last came back from the archive (idle archiving counts
  it as activity, so a session just read is not archived again at once).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("archive_key", sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column("archive_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("archive_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("archive_time", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("restore_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("restore_time")
        batch.drop_column("archive_time")
        batch.drop_column("archive_sha256")
        batch.drop_column("archive_size")
        batch.drop_column("archive_key")
