"""Metrics daily rollups: indicator queries that do not grow with history.

`indicator_day` and `rating_day` hold per-(slice, day) counts, sums and histogram
buckets, kept by deltas in the consumer's transaction; `rollup_policy` names the SLA
targets their SLA hits were counted with. Value indexes on the distribution columns
serve the exact stage of a percentile (the values of one bucket).

The tables start empty. On a database that already holds facts they are marked
incomplete (`rollup_policy.complete`), so indicator queries keep scanning the facts,
correct but slower, until `servicetrail metrics rebuild` fills them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:00:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS: Final = "servicetrail_metrics"
# Frozen here on purpose (a migration must not change when the code does).
DEFAULT_SLA: Final = {
    "accept": {"emergency": 15.0, "normal": 240.0, "urgent": 60.0},
    "arrive": {"emergency": 120.0, "normal": 2880.0, "urgent": 480.0},
}
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
# (table, value, its "at"): the at column is included for index-only scans.
VALUE_INDEXES: Final = (
    ("order_fact", "response_time_s", "first_accepted_at"),
    ("order_fact", "arrival_time_s", "first_arrived_at"),
    ("order_fact", "diagnosis_time_s", "first_diagnosed_at"),
    ("order_fact", "resolution_time_s", "first_final_at"),
    ("complaint", "resolution_s", "resolved_at"),
)


def upgrade() -> None:
    op.create_table(
        "indicator_day",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        # Counters in the indexes: a window's rows are read index-only, in key order.
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            "day",
            "indicator",
            "bucket",
            postgresql_include=["n", "hits", "total"],
        ),
        schema="metrics",
    )
    counters = (
        "ratings",
        "satisfied",
        "score_sum",
        "attitude_sum",
        "nps_count",
        "promoters",
        "detractors",
        *LEVEL_COLUMNS,
    )
    op.create_table(
        "rating_day",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("dimension_value", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in counters),
        # What the scores read (an index has 32 columns at most).
        sa.PrimaryKeyConstraint(
            "dimension",
            "dimension_value",
            "day",
            postgresql_include=["ratings", "satisfied", "attitude_sum", *LEVEL_COLUMNS],
        ),
        schema="metrics",
    )
    op.create_table(
        "rollup_policy",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sla", sa.Text(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.CheckConstraint("id = 1", name="single_rollup_policy"),
        sa.PrimaryKeyConstraint("id"),
        schema="metrics",
    )
    op.execute(
        sa.text(
            # Facts stored before this migration are not in the (empty) rollups: the
            # queries keep scanning the facts until `servicetrail metrics rebuild`.
            "INSERT INTO metrics.rollup_policy (id, sla, complete) VALUES "
            "(1, :sla, NOT EXISTS (SELECT 1 FROM metrics.order_fact))"
        ).bindparams(sla=json.dumps(DEFAULT_SLA, sort_keys=True))
    )
    op.create_index(
        "ix_indicator_day_indicator",
        "indicator_day",
        ["dimension", "indicator", "day"],
        schema="metrics",
        postgresql_include=["dimension_value", "n", "hits"],
    )
    for table, column, at in VALUE_INDEXES:
        op.create_index(
            f"ix_{table}_{column}",
            table,
            [column],
            schema="metrics",
            postgresql_include=[at],
        )
    for table in ("indicator_day", "rating_day", "rollup_policy"):
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON metrics.{table} TO {METRICS}"
        )


def downgrade() -> None:
    for table, column, _ in VALUE_INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table, schema="metrics")
    for table in ("rollup_policy", "rating_day", "indicator_day"):
        op.drop_table(table, schema="metrics")
