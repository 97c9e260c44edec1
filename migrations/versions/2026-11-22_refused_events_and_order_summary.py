"""Remembered refusals (durable answers by event id) and the order summary for listings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 15:42:55.689424
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_summary",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=True),
        sa.Column("technician_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_summary")),
        schema="event_store",
    )
    op.create_index(
        "ix_order_summary_customer_id",
        "order_summary",
        ["customer_id", "order_id"],
        unique=False,
        schema="event_store",
    )
    op.create_index(
        "ix_order_summary_status",
        "order_summary",
        ["status"],
        unique=False,
        schema="event_store",
    )
    op.create_index(
        "ix_order_summary_technician_id",
        "order_summary",
        ["technician_id", "order_id"],
        unique=False,
        schema="event_store",
    )
    op.create_table(
        "refused_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("request_digest", sa.LargeBinary(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("extra", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_refused_event")),
        schema="event_store",
    )


def downgrade() -> None:
    op.drop_table("refused_event", schema="event_store")
    op.drop_index(
        "ix_order_summary_technician_id",
        table_name="order_summary",
        schema="event_store",
    )
    op.drop_index(
        "ix_order_summary_status", table_name="order_summary", schema="event_store"
    )
    op.drop_index(
        "ix_order_summary_customer_id", table_name="order_summary", schema="event_store"
    )
    op.drop_table("order_summary", schema="event_store")
