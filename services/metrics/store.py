"""Metrics tables: per-order facts (in PostgreSQL, not RAM), watermark, tracking."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    Uuid,
)

from shared.db.base import METRICS_SCHEMA, metadata
from shared.db.tracking import tracking_tables

order_fact: Final = Table(
    "order_fact",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("region", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("urgency", Text, nullable=False),
    Index("ix_order_fact_created_at", "created_at"),
    schema=METRICS_SCHEMA,
)

# The provenance of every answer: the recordedtime of the last applied event.
applied_watermark: Final = Table(
    "applied_watermark",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_recorded_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("id = 1", name="single_row"),
    schema=METRICS_SCHEMA,
)

tracking: Final = tracking_tables(METRICS_SCHEMA)
