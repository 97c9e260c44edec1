"""Intake read side: one order's current state, and listings."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, Final
from uuid import UUID

from sqlalchemy import Select, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.schemas import (
    OrderTimeline,
    OrderView,
    QuoteView,
    StageTimes,
)
from services.intake.timeline import (
    build_timeline,
    final_price_of,
    seen_events,
    technician_ids,
)
from shared.db.base import DISPATCH_SCHEMA
from shared.db.engine import driver_of
from shared.db.event_store import load_state, order_event
from shared.db.order_summary import Page, list_orders
from shared.domain.actors import Actor, Role
from shared.domain.errors import Forbidden, OrderNotFound
from shared.domain.lifecycle import OrderState, OrderStatus, Quote

logger = logging.getLogger(__name__)

# Dispatch's registry, read in place: intake shares the database, not dispatch's
# code. Its role needs USAGE on the schema and SELECT on these two columns.
_TECHNICIAN_NAMES: Final = text(
    f"SELECT technician_id, name FROM {DISPATCH_SCHEMA}.technician "  # noqa: S608
    "WHERE technician_id = ANY(:ids)"
)
# No privilege, no such table, no such schema: the names are then unknown.
_UNREACHABLE: Final = frozenset({"42501", "42P01", "3F000"})


def _quote(quote: Quote | None) -> QuoteView | None:
    if quote is None:
        return None
    return QuoteView(
        event_id=quote.event_id, currency=quote.currency, total=quote.total
    )


def _view(state: OrderState) -> OrderView:
    return OrderView(
        order_id=state.order_id,
        status=state.status.value,
        orderversion=state.version,
        customer_id=state.customer_id,
        technician_id=state.technician_id,
        category=state.category,
        region=state.region,
        urgency=None if state.urgency is None else state.urgency.value,
        warranty=state.warranty,
        times=StageTimes(
            created_at=state.created_at,
            first_assigned_at=state.first_assigned_at,
            first_accepted_at=state.first_accepted_at,
            first_arrived_at=state.first_arrived_at,
            first_diagnosed_at=state.first_diagnosed_at,
            first_completed_at=state.first_completed_at,
            completed_at=state.completed_at,
            cancelled_at=state.cancelled_at,
            reopened_at=state.reopened_at,
            last_event_at=state.last_event_at,
        ),
        visits=state.visits,
        current_quote=_quote(state.current_quote),
        approved_quote=_quote(state.approved_quote),
        final_price=final_price_of(state),
        rated=state.rated,
        reopen_count=state.reopen_count,
        open_complaints=sorted(state.open_complaints),
        eta=state.promised_arrival,
    )


def _may_see(actor: Actor, state: OrderState) -> bool:
    if actor.role in (Role.DISPATCHER, Role.ADMIN):
        return True
    return actor.role is Role.CUSTOMER and actor.id == state.customer_id


async def _visible_state(
    conn: AsyncConnection, order_id: UUID, actor: Actor
) -> OrderState:
    """The order's state; OrderNotFound also when the caller may not see it."""
    state = await load_state(await driver_of(conn), order_id)
    if state is None or not _may_see(actor, state):
        raise OrderNotFound(f"order {order_id} not found")
    return state


def _stream(order_id: UUID, *, up_to: int) -> Select[tuple[Any]]:
    """The order's stored envelopes up to version `up_to`, in version order."""
    return (
        select(order_event.c.envelope)
        .where(order_event.c.order_id == order_id, order_event.c.version <= up_to)
        .order_by(order_event.c.version)
    )


async def get_order(
    conn: AsyncConnection, order_id: UUID, *, actor: Actor
) -> OrderView:
    """The order's current state; 404 also when the caller may not see it."""
    return _view(await _visible_state(conn, order_id, actor))


async def _technician_names(
    conn: AsyncConnection, ids: Collection[str]
) -> dict[str, str]:
    """Names from dispatch's registry; none when it cannot be read.

    Must be the request's last statement: a refused read aborts the transaction.
    """
    if not ids:
        return {}
    try:
        rows = await conn.execute(_TECHNICIAN_NAMES, {"ids": list(ids)})
    except DBAPIError as err:
        if getattr(err.orig, "sqlstate", None) not in _UNREACHABLE:
            raise
        logger.info(
            "technician names unavailable (intake may not read %s.technician): %s",
            DISPATCH_SCHEMA,
            err.orig,
        )
        return {}
    return {row.technician_id: row.name for row in rows}


async def get_timeline(
    conn: AsyncConnection, order_id: UUID, *, actor: Actor
) -> OrderTimeline:
    """The order's events as its customer may see them, with a summary.

    Read up to the state's version, so the summary and the entries agree.
    """
    state = await _visible_state(conn, order_id, actor)
    seen = seen_events(await conn.scalars(_stream(order_id, up_to=state.version)))
    names = await _technician_names(conn, technician_ids(seen))
    return build_timeline(state, seen, names)


async def list_customer_orders(
    conn: AsyncConnection,
    *,
    actor: Actor,
    customer_id: str | None,
    statuses: Collection[OrderStatus] = (),
    region: str | None = None,
    limit: int,
    cursor: str | None,
) -> Page:
    """A customer's own orders; dispatchers and admins may list anyone's (or all)."""
    if actor.role is Role.CUSTOMER:
        if customer_id not in (None, actor.id):
            raise Forbidden("Customers list only their own orders.")
        customer_id = actor.id
    return await list_orders(
        conn,
        customer_id=customer_id,
        statuses=[s.value for s in statuses],
        region=region,
        limit=limit,
        cursor=cursor,
    )
