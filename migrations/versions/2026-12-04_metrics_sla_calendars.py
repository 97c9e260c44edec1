"""Metrics: SLA clocks under business calendars (indicators.md v2, "Business
calendars").

`order_fact` gains each order's accept and arrive deadlines (`accept_due_at`,
`arrive_due_at`), computed by the consumer under the recorded policy's calendars and
pauses (`rollup_policy.sla`); the censored SLA rates, the overdue count and the
rollups compare with them instead of created_at + target, and their indexes serve
the censored windows.

Facts stored before this revision are filled with created_at + the recorded target
for their urgency: the default calendar (24x7) with no pause, which is all a policy
could be before, so the numbers and the rollups stay exactly as they were. A policy
configured with calendars recomputes the deadlines at the service's start.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 06:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STEPS: Final = ("accept", "arrive")


def upgrade() -> None:
    for step in STEPS:
        op.add_column(
            "order_fact",
            sa.Column(f"{step}_due_at", sa.DateTime(timezone=True)),
            schema="metrics",
        )
        op.create_index(
            f"ix_order_fact_{step}_due_at",
            "order_fact",
            [f"{step}_due_at"],
            schema="metrics",
        )
    # created_at + the recorded target (minutes) of the row's urgency; none: NULL.
    op.execute(
        "UPDATE metrics.order_fact f SET "
        + ", ".join(
            f"{step}_due_at = f.created_at + make_interval(secs => "
            f"((p.sla::jsonb -> '{step}' ->> f.urgency)::float8 * 60))"
            for step in STEPS
        )
        + " FROM metrics.rollup_policy p"
    )


def downgrade() -> None:
    for step in STEPS:
        op.drop_index(f"ix_order_fact_{step}_due_at", "order_fact", schema="metrics")
        op.drop_column("order_fact", f"{step}_due_at", schema="metrics")
