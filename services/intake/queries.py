"""Intake read side: one order's current state, and listings."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.schemas import (
    FinalPriceView,
    OrderView,
    QuoteView,
    StageTimes,
)
from shared.db.engine import driver_of
from shared.db.event_store import load_state
from shared.db.order_summary import Page, list_orders
from shared.domain.actors import Actor, Role
from shared.domain.errors import Forbidden, OrderNotFound
from shared.domain.lifecycle import OrderState, Quote


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
        final_price=None
        if state.final_total is None
        else FinalPriceView(
            currency=state.final_currency,
            total=state.final_total,
            outcome=None if state.final_outcome is None else state.final_outcome.value,
        ),
        rated=state.rated,
        reopen_count=state.reopen_count,
        open_complaints=sorted(state.open_complaints),
    )


def _may_see(actor: Actor, state: OrderState) -> bool:
    if actor.role in (Role.DISPATCHER, Role.ADMIN):
        return True
    return actor.role is Role.CUSTOMER and actor.id == state.customer_id


async def get_order(
    conn: AsyncConnection, order_id: UUID, *, actor: Actor
) -> OrderView:
    """The order's current state; 404 also when the caller may not see it."""
    state = await load_state(await driver_of(conn), order_id)
    if state is None or not _may_see(actor, state):
        raise OrderNotFound(f"order {order_id} not found")
    return _view(state)


async def list_customer_orders(
    conn: AsyncConnection,
    *,
    actor: Actor,
    customer_id: str | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """A customer's own orders; dispatchers and admins may list anyone's (or all)."""
    if actor.role is Role.CUSTOMER:
        if customer_id not in (None, actor.id):
            raise Forbidden("Customers list only their own orders.")
        customer_id = actor.id
    return await list_orders(conn, customer_id=customer_id, limit=limit, cursor=cursor)
