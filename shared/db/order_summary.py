"""One row per order, written with each append: what listings read.

`state` is the order folded up to `version` (shared.domain.state_codec): writes
decide from it instead of folding the stream. NULL for orders last written before
it was kept (migration 0009); the next write rebuilds it from the stream.

Listings page by keyset on `(created_at, order_id)`, newest first; the cursor is opaque
to clients (base64 of that pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    Uuid,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.db.keyset import Key, cut_page, newest_first

order_summary: Final = Table(
    "order_summary",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("customer_id", Text, nullable=True),
    Column("technician_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("state", JSONB, nullable=True),
    Index("ix_order_summary_customer_id", "customer_id", "order_id"),
    Index("ix_order_summary_technician_id", "technician_id", "order_id"),
    Index("ix_order_summary_status", "status"),
    schema=EVENT_STORE_SCHEMA,
)


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Row[tuple[object, ...]]]
    next_cursor: str | None


async def list_orders(
    conn: AsyncConnection,
    *,
    customer_id: str | None = None,
    technician_id: str | None = None,
    statuses: Sequence[str] = (),
    region: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    """Orders matching every given filter, newest first, one page."""
    # Not the state: a listing would fetch and decode a document per row for nothing.
    query = select(*(c for c in order_summary.c if c is not order_summary.c.state))
    if customer_id is not None:
        query = query.where(order_summary.c.customer_id == customer_id)
    if technician_id is not None:
        query = query.where(order_summary.c.technician_id == technician_id)
    if statuses:
        query = query.where(order_summary.c.status.in_(statuses))
    if region is not None:
        # From the stored state: orders whose state is not kept yet (written
        # before migration 0009 and not since) have none, and are not listed.
        query = query.where(order_summary.c.state["region"].astext == region)
    query = newest_first(
        query,
        order_summary.c.created_at,
        order_summary.c.order_id,
        cursor=cursor,
        limit=limit,
    )
    rows = (await conn.execute(query)).all()
    page, next_cursor = cut_page(
        rows, limit=limit, key=lambda row: Key(row.created_at, row.order_id)
    )
    return Page(page, next_cursor)
