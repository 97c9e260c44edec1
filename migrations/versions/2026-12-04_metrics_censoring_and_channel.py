"""Metrics: censoring of unanswered orders and the `channel` slice (indicators.md v2).

`order_fact` gains the order's `channel` and its assignment spans (`assignments`,
JSON: who held the order when, up to its first arrival), which a censored SLA breach
is charged by; a partial index serves `orders_unaccepted_overdue`. `rating` and
`complaint` gain the channel, and `open_order_count` keys on it.

Facts stored before this revision have no channel and no spans, and the rollups
counted their SLA rates uncensored: on a database holding facts the rollups are
marked incomplete (queries scan the facts) until `servicetrail metrics rebuild`
recounts everything from the ledger.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 00:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_KEYS = ("region", "category", "urgency", "technician_id")
METRICS = "servicetrail_metrics"


def upgrade() -> None:
    op.add_column("order_fact", sa.Column("channel", sa.Text()), schema="metrics")
    op.add_column(
        "order_fact",
        sa.Column("assignments", sa.Text(), server_default="[]", nullable=False),
        schema="metrics",
    )
    op.create_index(
        "ix_order_fact_unaccepted",
        "order_fact",
        ["created_at"],
        schema="metrics",
        postgresql_where=sa.text("open AND first_accepted_at IS NULL"),
    )
    for table in ("rating", "complaint"):
        op.add_column(table, sa.Column("channel", sa.Text()), schema="metrics")
    op.add_column(
        "open_order_count",
        sa.Column("channel", sa.Text(), server_default="", nullable=False),
        schema="metrics",
    )
    op.drop_constraint("pk_open_order_count", "open_order_count", schema="metrics")
    op.create_primary_key(
        "pk_open_order_count",
        "open_order_count",
        [*OPEN_KEYS, "channel"],
        schema="metrics",
    )
    op.execute(
        "UPDATE metrics.rollup_policy SET complete = false "
        "WHERE EXISTS (SELECT 1 FROM metrics.order_fact)"
    )


def downgrade() -> None:
    # Counts of the same slice without its channel add up.
    op.execute(
        "CREATE TEMPORARY TABLE open_counts ON COMMIT DROP AS "
        "SELECT region, category, urgency, technician_id, sum(orders) AS orders "
        "FROM metrics.open_order_count GROUP BY 1, 2, 3, 4"
    )
    op.execute("DELETE FROM metrics.open_order_count")
    op.drop_constraint("pk_open_order_count", "open_order_count", schema="metrics")
    op.drop_column("open_order_count", "channel", schema="metrics")
    op.execute("INSERT INTO metrics.open_order_count SELECT * FROM open_counts")
    op.create_primary_key(
        "pk_open_order_count", "open_order_count", list(OPEN_KEYS), schema="metrics"
    )
    for table in ("rating", "complaint"):
        op.drop_column(table, "channel", schema="metrics")
    op.drop_index("ix_order_fact_unaccepted", "order_fact", schema="metrics")
    op.drop_column("order_fact", "assignments", schema="metrics")
    op.drop_column("order_fact", "channel", schema="metrics")
