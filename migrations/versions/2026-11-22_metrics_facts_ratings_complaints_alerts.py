"""Metrics: per-order facts with indicator columns, ratings, complaints, alerts, outbox.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 16:11:33.812793
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Derived state only: drop it and let the consumer replay from the first offset
    # (or run `servicetrail metrics rebuild`), since the old rows lack the new facts.
    op.execute("DELETE FROM metrics.order_fact")
    op.execute("DELETE FROM metrics.processed_event")
    op.execute("DELETE FROM metrics.consumer_offset")
    op.create_table(
        "alert",
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alert")),
        schema="metrics",
    )
    op.create_index(
        "ix_alert_open_rule_scope",
        "alert",
        ["rule", "scope"],
        unique=True,
        schema="metrics",
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_table(
        "complaint",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("complaint_id", sa.Text(), nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution_s", sa.Float(), nullable=True),
        sa.Column("technician_id", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("urgency", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "complaint_id", name=op.f("pk_complaint")),
        schema="metrics",
    )
    op.create_index(
        "ix_complaint_resolved_at",
        "complaint",
        ["resolved_at"],
        unique=False,
        schema="metrics",
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
        schema="metrics",
    )
    op.create_index(
        "ix_outbox_message_unpublished",
        "outbox_message",
        ["id"],
        unique=False,
        schema="metrics",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "rating",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("nps", sa.SmallInteger(), nullable=True),
        sa.Column("attitude", sa.SmallInteger(), nullable=True),
        sa.Column("professionalism", sa.SmallInteger(), nullable=True),
        sa.Column("communication", sa.SmallInteger(), nullable=True),
        sa.Column("punctuality", sa.SmallInteger(), nullable=True),
        sa.Column("price_fairness", sa.SmallInteger(), nullable=True),
        sa.Column("technician_id", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("urgency", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_rating")),
        schema="metrics",
    )
    op.create_index(
        "ix_rating_rated_at", "rating", ["rated_at"], unique=False, schema="metrics"
    )
    op.add_column(
        "order_fact",
        sa.Column("facts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("last_version", sa.Integer(), nullable=False),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("first_accepted_at", sa.DateTime(timezone=True), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("response_time_s", sa.Float(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("accepted_technician_id", sa.Text(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("first_arrived_at", sa.DateTime(timezone=True), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("arrival_time_s", sa.Float(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("arrived_technician_id", sa.Text(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("first_diagnosed_at", sa.DateTime(timezone=True), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("diagnosis_time_s", sa.Float(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("first_final_at", sa.DateTime(timezone=True), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("resolution_time_s", sa.Float(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("first_final_technician_id", sa.Text(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("first_time_fix", sa.Boolean(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("resolved", sa.Boolean(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("reopened", sa.Boolean(), nullable=False),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("complaint_filed", sa.Boolean(), nullable=False),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("approved_total", sa.BigInteger(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("price_deviation", sa.Float(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("overrun", sa.Boolean(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("requoted", sa.Boolean(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("quoted_before_work", sa.Boolean(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact",
        sa.Column("free_warranty_completion", sa.Boolean(), nullable=True),
        schema="metrics",
    )
    op.add_column(
        "order_fact", sa.Column("open", sa.Boolean(), nullable=False), schema="metrics"
    )
    op.create_index(
        "ix_order_fact_first_accepted_at",
        "order_fact",
        ["first_accepted_at"],
        unique=False,
        schema="metrics",
    )
    op.create_index(
        "ix_order_fact_first_arrived_at",
        "order_fact",
        ["first_arrived_at"],
        unique=False,
        schema="metrics",
    )
    op.create_index(
        "ix_order_fact_first_diagnosed_at",
        "order_fact",
        ["first_diagnosed_at"],
        unique=False,
        schema="metrics",
    )
    op.create_index(
        "ix_order_fact_first_final_at",
        "order_fact",
        ["first_final_at"],
        unique=False,
        schema="metrics",
    )


def downgrade() -> None:
    op.drop_index(
        "ix_order_fact_first_final_at", table_name="order_fact", schema="metrics"
    )
    op.drop_index(
        "ix_order_fact_first_diagnosed_at", table_name="order_fact", schema="metrics"
    )
    op.drop_index(
        "ix_order_fact_first_arrived_at", table_name="order_fact", schema="metrics"
    )
    op.drop_index(
        "ix_order_fact_first_accepted_at", table_name="order_fact", schema="metrics"
    )
    op.drop_column("order_fact", "open", schema="metrics")
    op.drop_column("order_fact", "free_warranty_completion", schema="metrics")
    op.drop_column("order_fact", "quoted_before_work", schema="metrics")
    op.drop_column("order_fact", "requoted", schema="metrics")
    op.drop_column("order_fact", "overrun", schema="metrics")
    op.drop_column("order_fact", "price_deviation", schema="metrics")
    op.drop_column("order_fact", "approved_total", schema="metrics")
    op.drop_column("order_fact", "complaint_filed", schema="metrics")
    op.drop_column("order_fact", "reopened", schema="metrics")
    op.drop_column("order_fact", "resolved", schema="metrics")
    op.drop_column("order_fact", "first_time_fix", schema="metrics")
    op.drop_column("order_fact", "first_final_technician_id", schema="metrics")
    op.drop_column("order_fact", "resolution_time_s", schema="metrics")
    op.drop_column("order_fact", "first_final_at", schema="metrics")
    op.drop_column("order_fact", "diagnosis_time_s", schema="metrics")
    op.drop_column("order_fact", "first_diagnosed_at", schema="metrics")
    op.drop_column("order_fact", "arrived_technician_id", schema="metrics")
    op.drop_column("order_fact", "arrival_time_s", schema="metrics")
    op.drop_column("order_fact", "first_arrived_at", schema="metrics")
    op.drop_column("order_fact", "accepted_technician_id", schema="metrics")
    op.drop_column("order_fact", "response_time_s", schema="metrics")
    op.drop_column("order_fact", "first_accepted_at", schema="metrics")
    op.drop_column("order_fact", "cancelled_at", schema="metrics")
    op.drop_column("order_fact", "last_version", schema="metrics")
    op.drop_column("order_fact", "facts", schema="metrics")
    op.drop_index("ix_rating_rated_at", table_name="rating", schema="metrics")
    op.drop_table("rating", schema="metrics")
    op.drop_index(
        "ix_outbox_message_unpublished",
        table_name="outbox_message",
        schema="metrics",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox_message", schema="metrics")
    op.drop_index("ix_complaint_resolved_at", table_name="complaint", schema="metrics")
    op.drop_table("complaint", schema="metrics")
    op.drop_index(
        "ix_alert_open_rule_scope",
        table_name="alert",
        schema="metrics",
        postgresql_where=sa.text("state = 'open'"),
    )
    op.drop_table("alert", schema="metrics")
