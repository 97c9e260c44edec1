"""Metrics: the fold's per-order document moves out of the scanned facts table.

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
    op.create_index(
        "ix_order_fact_open",
        "order_fact",
        ["order_id"],
        unique=False,
        schema="metrics",
        postgresql_where=sa.text("open"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_order_fact_open",
        table_name="order_fact",
        schema="metrics",
        postgresql_where=sa.text("open"),
    )
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
