"""The folded state beside each order's summary: writes decide without a replay.

Nullable and not backfilled: an order last written before this revision has no
state, and its next write rebuilds it from the stream (the stream stays the source
of truth). The writers' roles already hold UPDATE on the whole table (0008), so no
grant is needed for the new column.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "order_summary",
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema="event_store",
    )


def downgrade() -> None:
    op.drop_column("order_summary", "state", schema="event_store")
