"""Intake HTTP routes: parse, call one command or query, return a schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, status

from services.intake import commands
from services.intake.schemas import CreateOrderRequest, OrderCreatedResponse
from shared.domain.actors import Actor, Role
from shared.http.body import json_body, openapi_body
from shared.http.deps import TraceParent, Writer, actor_with_role

router = APIRouter(prefix="/v1", tags=["orders"])

Customer = Annotated[Actor, Depends(actor_with_role(Role.CUSTOMER, Role.DISPATCHER))]


@router.post(
    "/orders",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderCreatedResponse,
    openapi_extra=openapi_body(CreateOrderRequest),
    summary="Create an order (stores `created`; contact goes to the vault)",
)
async def create_order(
    writer: Writer,
    actor: Customer,
    body: Annotated[CreateOrderRequest, Depends(json_body(CreateOrderRequest))],
    traceparent: TraceParent,
) -> OrderCreatedResponse:
    created = await commands.create_order(
        writer, body, actor=actor, now=datetime.now(UTC), traceparent=traceparent
    )
    return OrderCreatedResponse(
        order_id=created.order_id, orderversion=created.version, event=created.envelope
    )
