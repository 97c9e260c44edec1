"""Ledger read side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger.schemas import HistoryEntry
from services.ledger.store import ledger_entry
from shared.domain.errors import OrderNotFound


async def get_history(conn: AsyncConnection, order_id: UUID) -> Sequence[HistoryEntry]:
    """Every ledger entry of one order in order; OrderNotFound when there is none."""
    rows = (
        await conn.execute(
            select(ledger_entry)
            .where(ledger_entry.c.order_id == order_id)
            .order_by(ledger_entry.c.position)
        )
    ).all()
    if not rows:
        raise OrderNotFound(f"The ledger holds no events of order {order_id}.")
    return [
        HistoryEntry(
            position=row.position,
            orderversion=row.order_version,
            chain_hash=bytes(row.chain_hash).hex(),
            event=json.loads(bytes(row.canonical)),
        )
        for row in rows
    ]
