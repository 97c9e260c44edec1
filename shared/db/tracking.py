"""Consumer tracking tables: stored offsets and processed event ids, per schema.

Each consuming service keeps these in its own schema and writes them in the same
transaction as its effect (eventsourcing's tracking records), so a crash or a
redelivery can neither lose nor double an effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Integer, Table, Text, Uuid

from shared.db.base import metadata


@dataclass(frozen=True, slots=True)
class TrackingTables:
    consumer_offset: Table
    processed_event: Table


def tracking_tables(schema: str, *, prefix: str = "") -> TrackingTables:
    """The tracking tables of one schema (created once per schema at import).

    A second consumer of another topic in the same schema takes a `prefix`: its
    processed ids must not mix with the order events' (reconciliation and the
    convergence checks compare those with the event store).
    """
    return TrackingTables(
        consumer_offset=Table(
            f"{prefix}consumer_offset",
            metadata,
            Column("group_id", Text, primary_key=True),
            Column("topic", Text, primary_key=True),
            Column("partition", Integer, primary_key=True),
            Column("offset", BigInteger, nullable=False),
            schema=schema,
        ),
        processed_event=Table(
            f"{prefix}processed_event",
            metadata,
            Column("event_id", Uuid, primary_key=True),
            schema=schema,
        ),
    )
