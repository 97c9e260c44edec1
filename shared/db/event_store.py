"""The event store: every order's stream with gapless versions, and the outbox.

Appends rely on the primary key `(order_id, version)` for optimistic concurrency (two
writers of one version: the database lets exactly one in, no read-then-write race) and
on the unique `event_id` for idempotency. The outbox row is written by the same
statement, so an event is stored if and only if it will be published.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.domain.lifecycle import OrderEvent
from shared.events.envelope import Envelope, encode, to_order_event
from shared.events.topics import ORDER_EVENTS

order_event: Final = Table(
    "order_event",
    metadata,
    Column("order_id", Uuid, nullable=False),
    Column("version", Integer, nullable=False),
    # A global, commit-independent sequence: for listings and lag, never for
    # "read everything after N" (ids are taken before commit, so they commit out of order).
    Column("position", BigInteger, Identity(), nullable=False, unique=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("actor", Text, nullable=False),
    # SHA-256 of the canonical request, to tell a retry from a reuse of the id.
    Column("request_digest", LargeBinary, nullable=False),
    Column("envelope", JSONB, nullable=False),
    PrimaryKeyConstraint("order_id", "version"),
    schema=EVENT_STORE_SCHEMA,
)

outbox_message: Final = Table(
    "outbox_message",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index(
        "ix_outbox_message_unpublished",
        "id",
        postgresql_where=text("published_at IS NULL"),
    ),
    schema=EVENT_STORE_SCHEMA,
)

_APPEND: Final = text(
    f"""
    WITH stored AS (
        INSERT INTO {EVENT_STORE_SCHEMA}.order_event
            (order_id, version, event_id, type, time, recorded_at, actor,
             request_digest, envelope)
        VALUES (:order_id, :version, :event_id, :type, :time, :recorded_at, :actor,
                :request_digest, CAST(:envelope AS jsonb))
        ON CONFLICT DO NOTHING
        RETURNING position, order_id
    )
    INSERT INTO {EVENT_STORE_SCHEMA}.outbox_message (topic, key, value)
    SELECT :topic, CAST(stored.order_id AS text), :value FROM stored
    RETURNING (SELECT position FROM stored)
    """  # noqa: S608 - schema is a constant, values are bound
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the store holds it: the domain event and its exact envelope."""

    event: OrderEvent
    envelope: dict[str, Any]
    request_digest: bytes
    position: int


@dataclass(frozen=True, slots=True)
class Appended:
    position: int


@dataclass(frozen=True, slots=True)
class AlreadyStored:
    """The event id exists: `same_request` tells a retry from a reused id."""

    stored: StoredEvent
    same_request: bool


@dataclass(frozen=True, slots=True)
class VersionTaken:
    """Another event already holds this order version: a concurrent writer won."""

    current_version: int


AppendOutcome = Appended | AlreadyStored | VersionTaken


async def append_event(
    conn: AsyncConnection,
    event: OrderEvent,
    *,
    envelope: dict[str, Any],
    request_digest: bytes,
) -> AppendOutcome:
    """Store one event and its outbox message in the caller's transaction."""
    result = await conn.execute(
        _APPEND,
        {
            "order_id": event.order_id,
            "version": event.version,
            "event_id": event.event_id,
            "type": type(event.data).TYPE,
            "time": event.time,
            "recorded_at": event.recorded_at,
            "actor": str(event.actor),
            "request_digest": request_digest,
            "envelope": json.dumps(envelope, ensure_ascii=False),
            "topic": ORDER_EVENTS,
            "value": encode(envelope),
        },
    )
    position = result.scalar_one_or_none()
    if position is not None:
        return Appended(position)
    existing = await find_event(conn, event.event_id)
    if existing is not None:
        return AlreadyStored(existing, existing.request_digest == request_digest)
    return VersionTaken(await current_version(conn, event.order_id))


def _stored(row: Any) -> StoredEvent:
    envelope = dict(row.envelope)
    return StoredEvent(
        event=to_order_event(Envelope.model_validate_json(json.dumps(envelope))),
        envelope=envelope,
        request_digest=bytes(row.request_digest),
        position=row.position,
    )


async def find_event(conn: AsyncConnection, event_id: UUID) -> StoredEvent | None:
    """The stored event with this id, if any."""
    row = (
        await conn.execute(
            select(
                order_event.c.envelope,
                order_event.c.request_digest,
                order_event.c.position,
            ).where(order_event.c.event_id == event_id)
        )
    ).one_or_none()
    return None if row is None else _stored(row)


async def load_stream(conn: AsyncConnection, order_id: UUID) -> Sequence[StoredEvent]:
    """Every event of one order in version order."""
    rows = await conn.execute(
        select(
            order_event.c.envelope, order_event.c.request_digest, order_event.c.position
        )
        .where(order_event.c.order_id == order_id)
        .order_by(order_event.c.version)
    )
    return [_stored(row) for row in rows]


async def current_version(conn: AsyncConnection, order_id: UUID) -> int:
    """The order's latest version, 0 when it has no events."""
    value = (
        await conn.execute(
            select(func.coalesce(func.max(order_event.c.version), 0)).where(
                order_event.c.order_id == order_id
            )
        )
    ).scalar_one()
    return int(value)


async def latest_recorded_at(conn: AsyncConnection) -> datetime | None:
    """When the newest event was stored (for lag measurements)."""
    value = (await conn.execute(select(func.max(order_event.c.recorded_at)))).scalar()
    return value if isinstance(value, datetime) else None


__all__ = [
    "AlreadyStored",
    "AppendOutcome",
    "Appended",
    "StoredEvent",
    "VersionTaken",
    "append_event",
    "find_event",
    "load_stream",
    "order_event",
    "outbox_message",
]
