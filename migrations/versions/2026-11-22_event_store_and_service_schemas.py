"""Event store, outbox, contact vault, ledger and metrics tables, one schema each.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 15:12:58.379890
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SCHEMAS = ("event_store", "intake", "dispatch", "ledger", "metrics")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    op.create_table(
        "consumer_offset",
        sa.Column("group_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id", "topic", "partition", name=op.f("pk_consumer_offset")
        ),
        schema="dispatch",
    )
    op.create_table(
        "processed_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_event")),
        schema="dispatch",
    )
    op.create_table(
        "order_event",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "position", sa.BigInteger(), sa.Identity(always=False), nullable=False
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("request_digest", sa.LargeBinary(), nullable=False),
        sa.Column("envelope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "version", name=op.f("pk_order_event")),
        sa.UniqueConstraint("event_id", name=op.f("uq_order_event_event_id")),
        sa.UniqueConstraint("position", name=op.f("uq_order_event_position")),
        schema="event_store",
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
        schema="event_store",
    )
    op.create_index(
        "ix_outbox_message_unpublished",
        "outbox_message",
        ["id"],
        unique=False,
        schema="event_store",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "contact",
        sa.Column("contact_ref", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("contact_ref", name=op.f("pk_contact")),
        schema="intake",
    )
    op.create_index(
        "ix_contact_customer_id",
        "contact",
        ["customer_id"],
        unique=False,
        schema="intake",
    )
    op.create_table(
        "consumer_offset",
        sa.Column("group_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id", "topic", "partition", name=op.f("pk_consumer_offset")
        ),
        schema="ledger",
    )
    op.create_table(
        "ledger_entry",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("order_version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "appended_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_ledger_entry")),
        sa.UniqueConstraint("event_id", name=op.f("uq_ledger_entry_event_id")),
        sa.UniqueConstraint(
            "order_id",
            "order_version",
            name=op.f("uq_ledger_entry_order_id_order_version"),
        ),
        schema="ledger",
    )
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_position", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_head")),
        schema="ledger",
    )
    op.create_table(
        "processed_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_event")),
        schema="ledger",
    )
    op.create_table(
        "applied_watermark",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_applied_watermark_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applied_watermark")),
        schema="metrics",
    )
    op.create_table(
        "consumer_offset",
        sa.Column("group_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id", "topic", "partition", name=op.f("pk_consumer_offset")
        ),
        schema="metrics",
    )
    op.create_table(
        "order_fact",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("urgency", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_fact")),
        schema="metrics",
    )
    op.create_index(
        "ix_order_fact_created_at",
        "order_fact",
        ["created_at"],
        unique=False,
        schema="metrics",
    )
    op.create_table(
        "processed_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_event")),
        schema="metrics",
    )
    # Single-row tables start with their one row, so appends can lock it.
    op.execute("INSERT INTO ledger.ledger_head (id, next_position) VALUES (1, 0)")
    op.execute("INSERT INTO metrics.applied_watermark (id) VALUES (1)")


def downgrade() -> None:
    op.drop_table("processed_event", schema="metrics")
    op.drop_index("ix_order_fact_created_at", table_name="order_fact", schema="metrics")
    op.drop_table("order_fact", schema="metrics")
    op.drop_table("consumer_offset", schema="metrics")
    op.drop_table("applied_watermark", schema="metrics")
    op.drop_table("processed_event", schema="ledger")
    op.drop_table("ledger_head", schema="ledger")
    op.drop_table("ledger_entry", schema="ledger")
    op.drop_table("consumer_offset", schema="ledger")
    op.drop_index("ix_contact_customer_id", table_name="contact", schema="intake")
    op.drop_table("contact", schema="intake")
    op.drop_index(
        "ix_outbox_message_unpublished",
        table_name="outbox_message",
        schema="event_store",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox_message", schema="event_store")
    op.drop_table("order_event", schema="event_store")
    op.drop_table("processed_event", schema="dispatch")
    op.drop_table("consumer_offset", schema="dispatch")
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA IF EXISTS {schema}")
