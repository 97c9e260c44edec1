"""Metrics: the fold's document out of the scanned facts table; open orders counted.

Every indicator query scans `metrics.order_fact`; its inline JSONB document made
that scan ten times wider than the columns it reads.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_state",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("facts", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_state")),
        schema="metrics",
    )
    op.execute(
        "INSERT INTO metrics.order_state (order_id, facts) "
        "SELECT order_id, facts::text FROM metrics.order_fact"
    )
    op.drop_column("order_fact", "facts", schema="metrics")
    op.create_table(
        "open_order_count",
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("urgency", sa.Text(), nullable=False),
        sa.Column("technician_id", sa.Text(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "region",
            "category",
            "urgency",
            "technician_id",
            name=op.f("pk_open_order_count"),
        ),
        schema="metrics",
    )
    op.execute(
        "INSERT INTO metrics.open_order_count "
        "SELECT region, category, urgency, coalesce(accepted_technician_id, ''), "
        "count(*) FROM metrics.order_fact WHERE open GROUP BY 1, 2, 3, 4"
    )


def downgrade() -> None:
    op.drop_table("open_order_count", schema="metrics")
    op.add_column(
        "order_fact",
        sa.Column("facts", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema="metrics",
    )
    op.execute(
        "UPDATE metrics.order_fact f SET facts = s.facts::jsonb "
        "FROM metrics.order_state s WHERE s.order_id = f.order_id"
    )
    op.alter_column("order_fact", "facts", nullable=False, schema="metrics")
    op.drop_table("order_state", schema="metrics")
