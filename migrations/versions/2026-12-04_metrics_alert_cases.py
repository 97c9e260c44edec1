"""Metrics alert cases (plan-do-check-act as events): `metrics.alert_case_event`, the
append-only steps of each alert's case (acknowledged, owned, action opened / closed,
closed), and `metrics.alert_case`, their fold per alert for the alert list and the
alert_ack_time_s / alert_close_time_s indicators.

The metrics role appends steps but never changes one; it rewrites the projection
(`servicetrail metrics rebuild` folds it again from the steps).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 00:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS: Final = "servicetrail_metrics"


def upgrade() -> None:
    op.create_table(
        "alert_case_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_alert_case_event")),
        sa.UniqueConstraint(
            "alert_id", "version", name=op.f("uq_alert_case_event_alert_id_version")
        ),
        schema="metrics",
    )
    op.create_table(
        "alert_case",
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("actions", sa.Integer(), nullable=False),
        sa.Column("open_actions", sa.Integer(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_time_s", sa.Float(), nullable=True),
        sa.Column("close_time_s", sa.Float(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("technician_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alert_case")),
        schema="metrics",
    )
    op.create_index(
        "ix_alert_case_acknowledged_at",
        "alert_case",
        ["acknowledged_at"],
        schema="metrics",
    )
    op.create_index(
        "ix_alert_case_closed_at", "alert_case", ["closed_at"], schema="metrics"
    )
    op.execute(f"GRANT SELECT, INSERT ON metrics.alert_case_event TO {METRICS}")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON metrics.alert_case TO {METRICS}"
    )


def downgrade() -> None:
    op.drop_index("ix_alert_case_closed_at", table_name="alert_case", schema="metrics")
    op.drop_index(
        "ix_alert_case_acknowledged_at", table_name="alert_case", schema="metrics"
    )
    op.drop_table("alert_case", schema="metrics")
    op.drop_table("alert_case_event", schema="metrics")
