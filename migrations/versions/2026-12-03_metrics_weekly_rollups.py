"""Metrics weekly rollups: a 30-day window reads four weeks and the days around
them, not 29 days of rows.

`indicator_week` and `rating_week` hold the daily rollups' rows per Monday-aligned
UTC week, kept by the same deltas in the consumer's transaction. They are filled
here from the daily rows (a week is the sum of its days), so a complete database
stays complete and needs no rebuild.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
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
INDICATOR_COUNTERS: Final = ("n", "hits", "total")
TABLES: Final = ("indicator_week", "rating_week")


def _week() -> sa.Column[object]:
    return sa.Column("week", sa.Date(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "indicator_week",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        _week(),
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            "week",
            "indicator",
            "bucket",
            postgresql_include=["n", "hits", "total"],
        ),
        schema="metrics",
    )
    op.create_index(
        "ix_indicator_week_indicator",
        "indicator_week",
        ["dimension", "indicator", "week"],
        schema="metrics",
        postgresql_include=["dimension_value", "n", "hits"],
    )
    op.create_table(
        "rating_week",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        _week(),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in RATING_COUNTERS),
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            "week",
            postgresql_include=list(SCORE_COUNTERS),
        ),
        schema="metrics",
    )
    op.create_index(
        "ix_rating_week_scores",
        "rating_week",
        ["dimension", "week"],
        schema="metrics",
        postgresql_include=["dimension_value", *SCORE_COUNTERS],
    )
    # A week is the sum of its days (ISO weeks start on Monday, as domain.week_of).
    for table, keys, counters in (
        ("indicator", ("indicator", "bucket"), INDICATOR_COUNTERS),
        ("rating", (), RATING_COUNTERS),
    ):
        grouped = ", ".join(("dimension", "dimension_value", "week", *keys))
        op.execute(
            f"INSERT INTO metrics.{table}_week ({grouped}, {', '.join(counters)}) "
            f"SELECT dimension, dimension_value, date_trunc('week', day)::date AS week"
            f"{''.join(', ' + k for k in keys)}, "
            + ", ".join(f"sum({c})" for c in counters)
            + f" FROM metrics.{table}_day GROUP BY {grouped}"
        )
    for table in TABLES:
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON metrics.{table} TO {METRICS}"
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table, schema="metrics")
