"""Metrics hourly rollups: a window's edges from whole hours, not a day of facts.

`indicator_hour` and `rating_hour` hold the daily rollups' rows per UTC hour, kept by
the same deltas in the consumer's transaction. A window reads whole days from the
daily rows, whole hours at its edges from these, and at most an hour at either end
from the per-order facts.

The tables start empty. On a database that already holds facts the rollups are
marked incomplete (`rollup_policy.complete`, as 0010 does), so indicator queries scan
the facts, correct but slower, until `servicetrail metrics rebuild` fills them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS: Final = "servicetrail_metrics"
# Frozen here on purpose (a migration must not change when the code does).
LEVEL_COLUMNS: Final = tuple(
    f"{dimension}_{level}"
    for dimension in (
        "attitude",
        "professionalism",
        "communication",
        "punctuality",
        "price_fairness",
    )
    for level in (5, 4, 3, 2, 1)
)
RATING_COUNTERS: Final = (
    "ratings",
    "satisfied",
    "score_sum",
    "attitude_sum",
    "nps_count",
    "promoters",
    "detractors",
    *LEVEL_COLUMNS,
)


def upgrade() -> None:
    op.create_table(
        "indicator_hour",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            "hour",
            "indicator",
            "bucket",
            postgresql_include=["n", "hits", "total"],
        ),
        schema="metrics",
    )
    op.create_index(
        "ix_indicator_hour_indicator",
        "indicator_hour",
        ["dimension", "indicator", "hour"],
        schema="metrics",
        postgresql_include=["dimension_value", "n", "hits"],
    )
    op.create_table(
        "rating_hour",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in RATING_COUNTERS),
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            "hour",
            postgresql_include=["ratings", "satisfied", "attitude_sum", *LEVEL_COLUMNS],
        ),
        schema="metrics",
    )
    # Facts stored before this migration are not in the (empty) hourly rollups: the
    # queries scan the facts until `servicetrail metrics rebuild` fills them.
    op.execute(
        "UPDATE metrics.rollup_policy SET complete = false "
        "WHERE EXISTS (SELECT 1 FROM metrics.order_fact)"
    )
    for table in ("indicator_hour", "rating_hour"):
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON metrics.{table} TO {METRICS}"
        )


def downgrade() -> None:
    for table in ("rating_hour", "indicator_hour"):
        op.drop_table(table, schema="metrics")
