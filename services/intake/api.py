"""Intake HTTP routes: parse, call one command or query, return a schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, status

from services.intake import commands, queries
from services.intake.schemas import (
    ContactErased,
    CreateOrderRequest,
    OrderCreatedResponse,
    OrderTimeline,
    OrderView,
)
from shared.domain.actors import Actor, Role
from shared.domain.lifecycle import OrderStatus
from shared.http.body import openapi_body
from shared.http.deps import (
    DbConnection,
    Engine,
    WriteCall,
    actor_with_role,
    write_call,
)
from shared.http.event_posts import EventRecorded
from shared.http.schemas import OrderPage
from shared.orders.posts import EventPost

router = APIRouter(prefix="/v1", tags=["orders"])

Customer = Annotated[Actor, Depends(actor_with_role(Role.CUSTOMER, Role.DISPATCHER))]
Admin = Annotated[Actor, Depends(actor_with_role(Role.ADMIN))]
Identifier = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^\S+$")]
# A write's writer, caller, body and trace context: one dependency, solved once.
OrderCreation = Annotated[
    WriteCall[CreateOrderRequest],
    Depends(write_call(CreateOrderRequest, Role.CUSTOMER, Role.DISPATCHER)),
]
CustomerPost = Annotated[
    WriteCall[EventPost],
    Depends(write_call(EventPost, Role.CUSTOMER, Role.DISPATCHER)),
]


@router.post(
    "/orders",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderCreatedResponse,
    openapi_extra=openapi_body(CreateOrderRequest),
    summary="Create an order (stores `created`; contact goes to the vault)",
)
async def create_order(call: OrderCreation) -> OrderCreatedResponse:
    created = await commands.create_order(
        call.writer,
        call.body,
        actor=call.actor,
        now=datetime.now(UTC),
        traceparent=call.traceparent,
    )
    return OrderCreatedResponse(
        order_id=created.order_id, orderversion=created.version, event=created.envelope
    )


@router.post(
    "/orders/{order_id}/events",
    status_code=status.HTTP_201_CREATED,
    response_model=EventRecorded,
    openapi_extra=openapi_body(EventPost),
    summary="Post a customer event: cancelled, quote_approved, quote_rejected, "
    "rated, reopened, complaint_filed",
)
async def post_event(order_id: UUID, call: CustomerPost) -> EventRecorded:
    recorded = await commands.post_event(
        call.writer,
        order_id,
        call.body,
        actor=call.actor,
        now=datetime.now(UTC),
        traceparent=call.traceparent,
    )
    return EventRecorded.of(recorded)


@router.get("/orders/{order_id}", response_model=OrderView)
async def get_order(order_id: UUID, conn: DbConnection, actor: Customer) -> OrderView:
    """The order's current state: status, version, stage times, quotes, final price."""
    return await queries.get_order(conn, order_id, actor=actor)


@router.get("/orders/{order_id}/timeline", response_model=OrderTimeline)
async def get_timeline(
    order_id: UUID, conn: DbConnection, actor: Customer
) -> OrderTimeline:
    """The order's events as its customer may see them: technician, ETA, quotes,
    final price, rating; no actor, contact or device data."""
    return await queries.get_timeline(conn, order_id, actor=actor)


@router.get("/orders", response_model=OrderPage)
async def list_orders(
    conn: DbConnection,
    actor: Customer,
    customer_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    status: Annotated[
        list[OrderStatus] | None,
        Query(description="Only orders in one of these statuses (repeatable)."),
    ] = None,
    region: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> OrderPage:
    """Orders newest first; customers see their own, dispatchers anyone's."""
    page = await queries.list_customer_orders(
        conn,
        actor=actor,
        customer_id=customer_id,
        statuses=status or (),
        region=region,
        limit=limit,
        cursor=cursor,
    )
    return OrderPage.of(page)


@router.delete("/customers/{customer_id}/contact", response_model=ContactErased)
async def erase_contact(
    customer_id: Identifier, engine: Engine, _: Admin
) -> ContactErased:
    """Erase the customer's contact data (GDPR); events and ledger stay verifiable."""
    erased = await commands.erase_contact(engine, customer_id)
    return ContactErased(customer_id=customer_id, contacts_erased=erased)
