"""Dispatch tables: technicians, their quality scores, unassignable orders, the
alerts outbox and the consumers' tracking."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Table,
    Text,
    Uuid,
    and_,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch.domain import Candidate, QualityScore
from shared.db.base import DISPATCH_SCHEMA, metadata
from shared.db.order_summary import order_summary
from shared.db.outbox import outbox_table
from shared.db.tracking import tracking_tables
from shared.domain.events import Urgency

technician: Final = Table(
    "technician",
    metadata,
    Column("technician_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("skills", ARRAY(Text), nullable=False),
    Column("regions", ARRAY(Text), nullable=False),
    Column("certifications", ARRAY(Text), nullable=False),
    Column("active", Boolean, nullable=False),
    Column(
        "registered_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
    ),
    Column(
        "updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    schema=DISPATCH_SCHEMA,
)

# Metrics' 30-day composite per technician, as last published on the quality topic
# (newest `as_of` wins): the assignment path never asks metrics synchronously.
technician_quality: Final = Table(
    "technician_quality",
    metadata,
    Column("technician_id", Text, primary_key=True),
    Column("composite", Float, nullable=True),
    Column("samples", BigInteger, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "composite IS NULL OR composite BETWEEN 0 AND 100", name="composite_range"
    ),
    CheckConstraint("samples >= 0", name="samples_not_negative"),
    schema=DISPATCH_SCHEMA,
)

# Orders that waited with nobody able to take them: an open `unassignable` alert
# while `cleared_at` is NULL. One row per order; a later episode replaces a cleared
# row with its own (deterministic) alert id.
unassignable_order: Final = Table(
    "unassignable_order",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("alert_id", Uuid, nullable=False),
    Column("category", Text, nullable=True),
    Column("region", Text, nullable=True),
    Column("urgency", Text, nullable=True),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("cleared_at", DateTime(timezone=True), nullable=True),
    # The dispatchers' listing: open alerts, oldest first.
    Index(
        "ix_unassignable_order_open",
        "raised_at",
        postgresql_where=text("cleared_at IS NULL"),
    ),
    schema=DISPATCH_SCHEMA,
)

# Dispatch's alerts leave through their own outbox (as metrics' do), written in the
# transaction that decides them; the event store's outbox is for order events only
# (its relay heals lost order logs by key = order id).
dispatch_outbox: Final = outbox_table(DISPATCH_SCHEMA)

tracking: Final = tracking_tables(DISPATCH_SCHEMA)
# The quality topic's consumer (technician scores) tracks apart from order events.
quality_tracking: Final = tracking_tables(DISPATCH_SCHEMA, prefix="quality_")

# Statuses in which an assigned order still occupies its technician.
OPEN_STATUSES: Final = (
    "assigned",
    "accepted",
    "on_site",
    "diagnosed",
    "quoted",
    "approved",
)


async def upsert_technician(conn: AsyncConnection, values: dict[str, object]) -> None:
    """Register a technician, or replace their profile (same id)."""
    statement = insert(technician).values(values)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["technician_id"],
            set_={
                **{k: statement.excluded[k] for k in values if k != "technician_id"},
                "updated_at": func.now(),
            },
        )
    )


async def find_technician(
    conn: AsyncConnection, technician_id: str
) -> Candidate | None:
    rows = await _candidates(conn, technician.c.technician_id == technician_id)
    return rows[0] if rows else None


async def eligible_candidates(
    conn: AsyncConnection, *, category: str, region: str
) -> Sequence[Candidate]:
    """Active technicians whose skills cover the category and regions the region."""
    return await _candidates(
        conn,
        and_(
            technician.c.active,
            literal(category) == func.any(technician.c.skills),
            literal(region) == func.any(technician.c.regions),
        ),
    )


async def _candidates(conn: AsyncConnection, condition: object) -> list[Candidate]:
    open_orders = (
        select(func.count())
        .select_from(order_summary)
        .where(order_summary.c.technician_id == technician.c.technician_id)
        .where(order_summary.c.status.in_(OPEN_STATUSES))
        .scalar_subquery()
    )
    rows = await conn.execute(
        select(
            technician.c.technician_id,
            technician.c.skills,
            technician.c.regions,
            technician.c.active,
            open_orders.label("open_orders"),
            technician_quality.c.composite,
            technician_quality.c.samples,
        )
        .select_from(
            technician.outerjoin(
                technician_quality,
                technician_quality.c.technician_id == technician.c.technician_id,
            )
        )
        .where(condition)  # type: ignore[arg-type]  # a SQL boolean expression
    )
    return [
        Candidate(
            technician_id=row.technician_id,
            skills=frozenset(row.skills),
            regions=frozenset(row.regions),
            active=row.active,
            open_orders=row.open_orders,
            quality=None
            if row.samples is None
            else QualityScore(composite=row.composite, samples=row.samples),
        )
        for row in rows
    ]


async def active_technicians(conn: AsyncConnection) -> Sequence[Candidate]:
    """Every active technician, with their open orders and score."""
    return await _candidates(conn, technician.c.active)


async def waiting_orders(
    conn: AsyncConnection,
    *,
    limit: int,
    after: UUID | None = None,
    covered: Collection[tuple[str, str]] | None = None,
) -> list[UUID]:
    """Orders with no technician (new, declined, expired, reopened), one page by id.

    With `covered`, only orders whose (category, region) is among them (and those
    whose state is not kept, which cannot be told): the others cannot be assigned.
    """
    query = select(order_summary.c.order_id).where(order_summary.c.status == "created")
    if covered is not None:
        state = order_summary.c.state
        query = query.where(
            or_(
                state.is_(None),
                tuple_(state["category"].astext, state["region"].astext).in_(
                    sorted(covered)
                ),
            )
        )
    if after is not None:
        query = query.where(order_summary.c.order_id > after)
    rows = await conn.execute(query.order_by(order_summary.c.order_id).limit(limit))
    return list(rows.scalars())


async def list_technicians(conn: AsyncConnection) -> Sequence[dict[str, object]]:
    rows = await conn.execute(select(technician).order_by(technician.c.technician_id))
    return [dict(row._mapping) for row in rows]


async def assignments_due(
    conn: AsyncConnection,
    cutoffs: Mapping[Urgency, datetime],
    *,
    limit: int,
    after: UUID | None = None,
) -> list[UUID]:
    """Assigned orders whose assignment is older than its urgency's cutoff.

    Reads the status index, then the state document of those rows only (orders
    awaiting `accepted` are few). A row without a state (written before it was
    kept) is returned too: the caller decides on the order's loaded state.
    """
    state = order_summary.c.state
    urgency = state["urgency"].astext
    assigned_at = func.cast(state["assigned_at"].astext, DateTime(timezone=True))
    due = [
        and_(
            urgency == value.value
            if value is not Urgency.NORMAL
            else or_(urgency == value.value, urgency.is_(None)),
            assigned_at <= cutoff,
        )
        for value, cutoff in cutoffs.items()
    ]
    query = (
        select(order_summary.c.order_id)
        .where(order_summary.c.status == "assigned")
        .where(or_(state.is_(None), *due))
    )
    if after is not None:
        query = query.where(order_summary.c.order_id > after)
    rows = await conn.execute(query.order_by(order_summary.c.order_id).limit(limit))
    return list(rows.scalars())


async def upsert_quality(
    conn: AsyncConnection, technician_id: str, score: QualityScore, *, as_of: datetime
) -> bool:
    """Keep the score unless a newer one is held; True when it was stored."""
    statement = insert(technician_quality).values(
        technician_id=technician_id,
        composite=score.composite,
        samples=score.samples,
        as_of=as_of,
    )
    stored = await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["technician_id"],
            set_={
                "composite": statement.excluded.composite,
                "samples": statement.excluded.samples,
                "as_of": statement.excluded.as_of,
            },
            where=technician_quality.c.as_of < statement.excluded.as_of,
        ).returning(technician_quality.c.technician_id)
    )
    return stored.first() is not None


@dataclass(frozen=True, slots=True)
class WaitingOrder:
    """An order nobody can take, as the unassignable alert names it."""

    order_id: UUID
    category: str | None
    region: str | None
    urgency: str | None


async def raise_unassignable(
    conn: AsyncConnection, order: WaitingOrder, *, alert_id: UUID, now: datetime
) -> bool:
    """Record an open alert for the order; False when this one is already held.

    A cleared row of an earlier episode is replaced; an open one is kept (its
    `raised_at` says since when the order waits with nobody to take it).
    """
    statement = insert(unassignable_order).values(
        order_id=order.order_id,
        alert_id=alert_id,
        category=order.category,
        region=order.region,
        urgency=order.urgency,
        raised_at=now,
        cleared_at=None,
    )
    excluded = statement.excluded
    raised = await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["order_id"],
            set_={
                "alert_id": excluded.alert_id,
                "category": excluded.category,
                "region": excluded.region,
                "urgency": excluded.urgency,
                "raised_at": excluded.raised_at,
                "cleared_at": None,
            },
            where=and_(
                unassignable_order.c.cleared_at.is_not(None),
                unassignable_order.c.alert_id != excluded.alert_id,
            ),
        ).returning(unassignable_order.c.order_id)
    )
    return raised.first() is not None


async def clear_unassignable(
    conn: AsyncConnection, order_id: UUID, *, now: datetime
) -> UUID | None:
    """Close the order's open alert; its id, or None when none was open."""
    cleared = await conn.execute(
        update(unassignable_order)
        .where(unassignable_order.c.order_id == order_id)
        .where(unassignable_order.c.cleared_at.is_(None))
        .values(cleared_at=now)
        .returning(unassignable_order.c.alert_id)
    )
    alert_id: UUID | None = cleared.scalar_one_or_none()
    return alert_id


async def list_unassignable(
    conn: AsyncConnection, *, limit: int
) -> Sequence[dict[str, object]]:
    """Open unassignable alerts, the longest waiting first."""
    rows = await conn.execute(
        select(unassignable_order)
        .where(unassignable_order.c.cleared_at.is_(None))
        .order_by(unassignable_order.c.raised_at, unassignable_order.c.order_id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]


async def publish(conn: AsyncConnection, *, topic: str, key: str, value: bytes) -> None:
    """Queue a record for the dispatch outbox relay (in the caller's transaction)."""
    await conn.execute(
        insert(dispatch_outbox).values(topic=topic, key=key, value=value)
    )
