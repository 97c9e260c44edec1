"""Metrics hourly and all-time rollups: a window's edges from whole hours, not a day
of facts; window=all from one row per indicator and bucket, not one per day.

`indicator_hour` and `rating_hour` hold the daily rollups' rows per UTC hour,
`indicator_total` and `rating_total` per slice over all time, kept by the same deltas
in the consumer's transaction. A window reads whole days from the daily rows, whole
hours at its edges from the hourly ones, and at most an hour at either end from the
per-order facts.

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
SCORE_COUNTERS: Final = ("ratings", "satisfied", "attitude_sum", *LEVEL_COLUMNS)
TABLES: Final = ("indicator_hour", "rating_hour", "indicator_total", "rating_total")
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


def _indicator_rollup(name: str, periods: list[sa.Column[object]]) -> None:
    op.create_table(
        name,
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        *periods,
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            *(p.name for p in periods),
            "indicator",
            "bucket",
            postgresql_include=["n", "hits", "total"],
        ),
        schema="metrics",
    )
    op.create_index(
        f"ix_{name}_indicator",
        name,
        ["dimension", "indicator", *(p.name for p in periods)],
        schema="metrics",
        postgresql_include=["dimension_value", "n", "hits"],
    )


def _rating_rollup(name: str, periods: list[sa.Column[object]]) -> None:
    op.create_table(
        name,
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        *periods,
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in RATING_COUNTERS),
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            *(p.name for p in periods),
            postgresql_include=list(SCORE_COUNTERS),
        ),
        schema="metrics",
    )
    if periods:
        _scores_index(name, periods[0].name)


def _scores_index(table: str, period: str) -> None:
    # The scores read every technician over a range of periods, index-only.
    op.create_index(
        f"ix_{table}_scores",
        table,
        ["dimension", period],
        schema="metrics",
        postgresql_include=["dimension_value", *SCORE_COUNTERS],
    )


def _hour() -> sa.Column[object]:
    return sa.Column("hour", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    _indicator_rollup("indicator_hour", [_hour()])
    _rating_rollup("rating_hour", [_hour()])
    _indicator_rollup("indicator_total", [])
    _rating_rollup("rating_total", [])
    _scores_index("rating_day", "day")
    # Facts stored before this migration are not in the (empty) new rollups: the
    # queries scan the facts until `servicetrail metrics rebuild` fills them.
    op.execute(
        "UPDATE metrics.rollup_policy SET complete = false "
        "WHERE EXISTS (SELECT 1 FROM metrics.order_fact)"
    )
    for table in TABLES:
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON metrics.{table} TO {METRICS}"
        )


def downgrade() -> None:
    op.drop_index("ix_rating_day_scores", table_name="rating_day", schema="metrics")
    for table in reversed(TABLES):
        op.drop_table(table, schema="metrics")
