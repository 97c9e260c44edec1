"""Dispatch tables: the technician registry and its consumer tracking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from uuid import UUID

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Table,
    Text,
    and_,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch.domain import Candidate
from shared.db.base import DISPATCH_SCHEMA, metadata
from shared.db.order_summary import order_summary
from shared.db.tracking import tracking_tables

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

tracking: Final = tracking_tables(DISPATCH_SCHEMA)

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
        ).where(condition)  # type: ignore[arg-type]  # a SQL boolean expression
    )
    return [
        Candidate(
            technician_id=row.technician_id,
            skills=frozenset(row.skills),
            regions=frozenset(row.regions),
            active=row.active,
            open_orders=row.open_orders,
        )
        for row in rows
    ]


async def waiting_orders(conn: AsyncConnection, *, limit: int) -> list[UUID]:
    """Orders with no technician: new ones nobody fitted, and declined ones."""
    rows = await conn.execute(
        select(order_summary.c.order_id)
        .where(order_summary.c.status == "created")
        .order_by(order_summary.c.created_at)
        .limit(limit)
    )
    return list(rows.scalars())


async def list_technicians(conn: AsyncConnection) -> Sequence[dict[str, object]]:
    rows = await conn.execute(select(technician).order_by(technician.c.technician_id))
    return [dict(row._mapping) for row in rows]
