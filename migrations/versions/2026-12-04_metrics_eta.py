"""Metrics ETA and unaccepted assignments: `order_fact.eta_error_s` (first arrival - promised arrival) for the
`eta_error_s` and `eta_kept_rate` indicators, with the value index their rolled-up
percentiles read; `rollup_policy.sla` records the ETA tolerance the rollups count
`eta_kept_rate` with. `unaccepted_assignment` keeps each decline and expired
assignment with the order's slice (`assignments_declined`, `assignments_expired`
per technician, rolled up like the facts; the scorecard lists their orders).

Facts stored before this migration have no ETA (and priced their multi-visit orders
by the final visit only), and their declines are not listed: on a database that holds
facts the rollups are marked incomplete, and `servicetrail metrics rebuild` recomputes
facts, declines and rollups from the ledger.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 00:00:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS: Final = "servicetrail_metrics"
# Frozen here on purpose (a migration must not change when the code does).
ETA_KEPT_S: Final = 900.0
ETA_KEY: Final = "eta_kept_s"


def _with_eta(sla: str, eta: float | None) -> str:
    """The recorded SLA JSON with (or, for None, without) the ETA tolerance."""
    content = json.loads(sla)
    if eta is None:
        content.pop(ETA_KEY, None)
    else:
        content[ETA_KEY] = eta
    return json.dumps(content, sort_keys=True)


def _record_eta(eta: float | None) -> None:
    bind = op.get_bind()
    for (sla,) in bind.execute(sa.text("SELECT sla FROM metrics.rollup_policy")):
        bind.execute(
            sa.text("UPDATE metrics.rollup_policy SET sla = :sla WHERE id = 1"),
            {"sla": _with_eta(sla, eta)},
        )


def upgrade() -> None:
    op.add_column("order_fact", sa.Column("eta_error_s", sa.Float()), schema="metrics")
    op.create_index(
        "ix_order_fact_eta_error_s",
        "order_fact",
        ["eta_error_s"],
        schema="metrics",
        postgresql_include=["first_arrived_at"],
    )
    op.create_table(
        "unaccepted_assignment",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("technician_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("urgency", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text()),
        sa.PrimaryKeyConstraint("event_id"),
        schema="metrics",
    )
    op.create_index(
        "ix_unaccepted_assignment_at", "unaccepted_assignment", ["at"], schema="metrics"
    )
    op.create_index(
        "ix_unaccepted_assignment_technician_at",
        "unaccepted_assignment",
        ["technician_id", "at"],
        schema="metrics",
    )
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON metrics.unaccepted_assignment "
        f"TO {METRICS}"
    )
    _record_eta(ETA_KEPT_S)
    op.execute(
        "UPDATE metrics.rollup_policy SET complete = false "
        "WHERE EXISTS (SELECT 1 FROM metrics.order_fact)"
    )


def downgrade() -> None:
    _record_eta(None)
    op.drop_table("unaccepted_assignment", schema="metrics")
    op.drop_index("ix_order_fact_eta_error_s", "order_fact", schema="metrics")
    op.drop_column("order_fact", "eta_error_s", schema="metrics")
