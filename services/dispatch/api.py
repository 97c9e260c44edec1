"""Dispatch HTTP routes: parse, call one command or query, return a schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, status

from services.dispatch import commands, queries
from services.dispatch.domain import AssignmentPolicy
from services.dispatch.schemas import (
    AssignRequest,
    BatchRequest,
    BatchResponse,
    BatchResult,
    TechnicianIn,
    TechnicianList,
    TechnicianOut,
    UnassignableList,
)
from shared.domain.actors import Actor, Role
from shared.domain.errors import DomainError
from shared.http.body import json_body, openapi_body
from shared.http.deps import (
    DbConnection,
    Engine,
    RateBudget,
    TraceParent,
    Writer,
    actor_with_role,
)
from shared.http.event_posts import EventRecorded
from shared.http.problems import domain_problem
from shared.http.schemas import OrderPage
from shared.orders.posts import EventPost

router = APIRouter(prefix="/v1", tags=["dispatch"])

Dispatcher = Annotated[Actor, Depends(actor_with_role(Role.DISPATCHER))]
FieldStaff = Annotated[
    Actor, Depends(actor_with_role(Role.TECHNICIAN, Role.DISPATCHER))
]
Technician = Annotated[Actor, Depends(actor_with_role(Role.TECHNICIAN))]
TechnicianId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^\S+$")]


async def get_policy(request: Request) -> AssignmentPolicy:
    policy: AssignmentPolicy = request.state.policy
    return policy


Policy = Annotated[AssignmentPolicy, Depends(get_policy)]


@router.post(
    "/technicians",
    status_code=status.HTTP_201_CREATED,
    response_model=TechnicianOut,
    openapi_extra=openapi_body(TechnicianIn),
    tags=["technicians"],
)
async def register_technician(
    writer: Writer,
    engine: Engine,
    _: Dispatcher,
    body: Annotated[TechnicianIn, Depends(json_body(TechnicianIn))],
    conn: DbConnection,
    policy: Policy,
) -> TechnicianOut:
    """Register a technician (or replace the profile); waiting orders are offered."""
    await commands.register_technician(
        writer, engine, body, now=datetime.now(UTC), policy=policy
    )
    listed = await queries.list_technicians(conn)
    return next(t for t in listed.items if t.technician_id == body.technician_id)


@router.get("/technicians", response_model=TechnicianList, tags=["technicians"])
async def list_technicians(conn: DbConnection, _: Dispatcher) -> TechnicianList:
    return await queries.list_technicians(conn)


@router.post(
    "/orders/{order_id}/assign",
    status_code=status.HTTP_201_CREATED,
    response_model=EventRecorded,
    openapi_extra=openapi_body(AssignRequest, required=False),
)
async def assign(
    order_id: UUID,
    writer: Writer,
    engine: Engine,
    actor: Dispatcher,
    body: Annotated[AssignRequest, Depends(json_body(AssignRequest, optional=True))],
    traceparent: TraceParent,
    policy: Policy,
) -> EventRecorded:
    """Assign by hand; without a body (or a technician_id) the engine picks."""
    recorded = await commands.assign_manually(
        writer,
        engine,
        order_id,
        body,
        actor=actor,
        now=datetime.now(UTC),
        traceparent=traceparent,
        policy=policy,
    )
    return EventRecorded.of(recorded)


@router.get("/dispatch/unassignable", response_model=UnassignableList)
async def unassignable_orders(
    conn: DbConnection,
    _: Dispatcher,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UnassignableList:
    """Orders waiting with nobody able to take them, the longest waiting first."""
    return await queries.list_unassignable(conn, limit=limit)


@router.post(
    "/orders/{order_id}/events",
    status_code=status.HTTP_201_CREATED,
    response_model=EventRecorded,
    openapi_extra=openapi_body(EventPost),
    summary="Post a technician or dispatcher event: accepted, declined, arrived, "
    "diagnosed, priced, completed, complaint_resolved, cancelled",
)
async def post_event(
    order_id: UUID,
    writer: Writer,
    actor: FieldStaff,
    body: Annotated[EventPost, Depends(json_body(EventPost))],
    traceparent: TraceParent,
) -> EventRecorded:
    recorded = await commands.post_event(
        writer,
        order_id,
        body,
        actor=actor,
        now=datetime.now(UTC),
        traceparent=traceparent,
    )
    return EventRecorded.of(recorded)


@router.post(
    "/events:batch",
    response_model=BatchResponse,
    openapi_extra=openapi_body(BatchRequest),
    summary="Offline sync: up to 500 events of the caller's orders, applied in order",
)
async def post_batch(
    writer: Writer,
    actor: Technician,
    body: Annotated[BatchRequest, Depends(json_body(BatchRequest))],
    traceparent: TraceParent,
    budget: RateBudget,
) -> BatchResponse:
    # A batch counts as its events against the rate limit; its arrival counted one.
    budget.spend(len(body.events) - 1)
    outcomes = await commands.apply_batch(
        writer,
        body,
        actor=actor,
        now=datetime.now(UTC),
        traceparent=traceparent,
    )
    return BatchResponse(results=[_batch_result(o) for o in outcomes])


def _batch_result(outcome: commands.BatchOutcome) -> BatchResult:
    item, result = outcome.item, outcome.result
    if isinstance(result, DomainError):
        return BatchResult(
            index=outcome.index,
            id=None if item is None else item.id,
            order_id=None if item is None else item.order_id,
            status="rejected",
            problem=domain_problem(result)[1],
        )
    return BatchResult(
        index=outcome.index,
        id=UUID(str(result.envelope["id"])),
        order_id=result.order_id,
        status="duplicate" if result.duplicate else "stored",
        orderversion=result.version,
    )


@router.get("/technicians/{technician_id}/orders", response_model=OrderPage)
async def technician_orders(
    technician_id: TechnicianId,
    conn: DbConnection,
    actor: FieldStaff,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> OrderPage:
    """The technician's open and recent orders, newest first."""
    page = await queries.technician_orders(
        conn, technician_id, actor=actor, limit=limit, cursor=cursor
    )
    return OrderPage.of(page)
