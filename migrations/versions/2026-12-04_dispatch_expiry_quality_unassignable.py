"""Dispatch that never strands an order: technicians' quality scores (published by
metrics, read by dispatch), unassignable-order alerts and dispatch's alert outbox.

- `dispatch.technician_quality`: the latest 30-day composite per technician, as read
  from the quality topic (the assignment path never calls metrics).
- `dispatch.unassignable_order`: one row per order that waited with nobody able to
  take it; open while `cleared_at` is NULL.
- `dispatch.outbox_message`: dispatch's alerts, written with the decision and relayed
  to the quality topic (the event store's outbox is for order events only).
- `metrics.technician_score_published`: what metrics last published per technician,
  so a score is published again only when it changed.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 00:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DISPATCH: Final = "servicetrail_dispatch"
METRICS: Final = "servicetrail_metrics"


def upgrade() -> None:
    op.create_table(
        "technician_quality",
        sa.Column("technician_id", sa.Text(), nullable=False),
        sa.Column("composite", sa.Float(), nullable=True),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "composite IS NULL OR composite BETWEEN 0 AND 100",
            name=op.f("ck_technician_quality_composite_range"),
        ),
        sa.CheckConstraint(
            "samples >= 0", name=op.f("ck_technician_quality_samples_not_negative")
        ),
        sa.PrimaryKeyConstraint("technician_id", name=op.f("pk_technician_quality")),
        schema="dispatch",
    )
    op.create_table(
        "unassignable_order",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("urgency", sa.Text(), nullable=True),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_unassignable_order")),
        schema="dispatch",
    )
    op.create_index(
        "ix_unassignable_order_open",
        "unassignable_order",
        ["raised_at"],
        schema="dispatch",
        postgresql_where=sa.text("cleared_at IS NULL"),
    )
    op.create_table(
        "outbox_message",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_message")),
        schema="dispatch",
    )
    op.create_index(
        "ix_outbox_message_unpublished",
        "outbox_message",
        ["id"],
        schema="dispatch",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "technician_score_published",
        sa.Column("technician_id", sa.Text(), nullable=False),
        sa.Column("composite", sa.Float(), nullable=True),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "technician_id", name=op.f("pk_technician_score_published")
        ),
        schema="metrics",
    )
    # The quality consumer's own tracking: its processed ids are not order events.
    op.create_table(
        "quality_consumer_offset",
        sa.Column("group_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id",
            "topic",
            "partition",
            name=op.f("pk_quality_consumer_offset"),
        ),
        schema="dispatch",
    )
    op.create_table(
        "quality_processed_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_quality_processed_event")),
        schema="dispatch",
    )
    for table in (
        "technician_quality",
        "unassignable_order",
        "outbox_message",
        "quality_consumer_offset",
    ):
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON dispatch.{table} TO {DISPATCH}")
    op.execute(
        f"GRANT SELECT, INSERT ON dispatch.quality_processed_event TO {DISPATCH}"
    )
    op.execute(f"GRANT USAGE ON SEQUENCE dispatch.outbox_message_id_seq TO {DISPATCH}")
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON metrics.technician_score_published "
        f"TO {METRICS}"
    )


def downgrade() -> None:
    op.drop_table("quality_processed_event", schema="dispatch")
    op.drop_table("quality_consumer_offset", schema="dispatch")
    op.drop_table("technician_score_published", schema="metrics")
    op.drop_index(
        "ix_outbox_message_unpublished", table_name="outbox_message", schema="dispatch"
    )
    op.drop_table("outbox_message", schema="dispatch")
    op.drop_index(
        "ix_unassignable_order_open", table_name="unassignable_order", schema="dispatch"
    )
    op.drop_table("unassignable_order", schema="dispatch")
    op.drop_table("technician_quality", schema="dispatch")
