"""One row per order, written with each append: what listings read.

Listings page by keyset on `(created_at, order_id)`, newest first; the cursor is opaque
to clients (base64 of that pair).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    Uuid,
    and_,
    or_,
    select,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.domain.errors import DomainError

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
    Index("ix_order_summary_customer_id", "customer_id", "order_id"),
    Index("ix_order_summary_technician_id", "technician_id", "order_id"),
    Index("ix_order_summary_status", "status"),
    schema=EVENT_STORE_SCHEMA,
)

MAX_PAGE: Final = 1000


class InvalidCursor(DomainError):
    code = "invalid_cursor"


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Row[tuple[object, ...]]]
    next_cursor: str | None


def _encode_cursor(created_at: datetime | None, order_id: UUID) -> str:
    raw = json.dumps(
        [None if created_at is None else created_at.isoformat(), str(order_id)]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        created, order = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), UUID(order)
    except (ValueError, TypeError) as err:
        raise InvalidCursor("the cursor is not one this service issued") from err


async def list_orders(
    conn: AsyncConnection,
    *,
    customer_id: str | None = None,
    technician_id: str | None = None,
    statuses: Sequence[str] = (),
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    """Orders matching every given filter, newest first, one page."""
    query = select(order_summary).order_by(
        order_summary.c.created_at.desc(), order_summary.c.order_id.desc()
    )
    if customer_id is not None:
        query = query.where(order_summary.c.customer_id == customer_id)
    if technician_id is not None:
        query = query.where(order_summary.c.technician_id == technician_id)
    if statuses:
        query = query.where(order_summary.c.status.in_(statuses))
    if cursor is not None:
        created_at, order_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                order_summary.c.created_at < created_at,
                and_(
                    order_summary.c.created_at == created_at,
                    order_summary.c.order_id < order_id,
                ),
            )
        )
    rows = (await conn.execute(query.limit(min(limit, MAX_PAGE) + 1))).all()
    page = rows[:limit]
    next_cursor = (
        _encode_cursor(page[-1].created_at, page[-1].order_id)
        if len(rows) > limit
        else None
    )
    return Page(page, next_cursor)
