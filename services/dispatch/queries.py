"""Dispatch read side: technicians, a technician's orders, unassignable orders."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch import store
from services.dispatch.schemas import (
    TechnicianList,
    TechnicianOut,
    UnassignableList,
    UnassignableOrder,
)
from shared.db.order_summary import Page, list_orders
from shared.domain.actors import Actor, Role
from shared.domain.errors import Forbidden


async def list_technicians(conn: AsyncConnection) -> TechnicianList:
    rows = await store.list_technicians(conn)
    return TechnicianList(items=[TechnicianOut.model_validate(row) for row in rows])


async def technician_orders(
    conn: AsyncConnection,
    technician_id: str,
    *,
    actor: Actor,
    limit: int,
    cursor: str | None,
) -> Page:
    """The technician's current and recent orders; only they and dispatchers see them."""
    if actor.role is Role.TECHNICIAN and actor.id != technician_id:
        raise Forbidden("Technicians see only their own orders.")
    return await list_orders(
        conn, technician_id=technician_id, limit=limit, cursor=cursor
    )


async def list_unassignable(conn: AsyncConnection, *, limit: int) -> UnassignableList:
    rows = await store.list_unassignable(conn, limit=limit)
    return UnassignableList(
        items=[UnassignableOrder.model_validate(row) for row in rows]
    )
