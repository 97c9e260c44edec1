"""Dispatch use cases: technicians, assignment, technician events, offline batches."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.dispatch import store
from services.dispatch.domain import choose_technician
from services.dispatch.schemas import (
    AssignRequest,
    BatchItem,
    BatchRequest,
    TechnicianIn,
)
from shared.db.engine import driver_of
from shared.db.event_store import event_id_at, load_state
from shared.domain.actors import Actor
from shared.domain.errors import DomainError, InvalidRequest, OrderNotFound
from shared.domain.events import (
    Accepted,
    Arrived,
    Assigned,
    AssignmentMethod,
    Cancelled,
    ComplaintResolved,
    Completed,
    Declined,
    Diagnosed,
    Priced,
)
from shared.domain.lifecycle import AUTO_DISPATCH, OrderState, ProposedEvent
from shared.events.canonical import fingerprint
from shared.orders.posts import EventPost, TakenPosts, field_errors, post_request
from shared.orders.request import AppendRequest, Recorded
from shared.orders.writer import OrderWriter

logger = logging.getLogger(__name__)

AUTO_ASSIGNMENT_NAMESPACE: Final = uuid5(
    NAMESPACE_URL, "urn:servicetrail:auto-assignment"
)

# What dispatch takes posts of: the field work, and the dispatcher's own events.
FIELD_POSTS: Final = TakenPosts(
    service="dispatch",
    types=frozenset(
        cls.TYPE
        for cls in (
            Accepted,
            Declined,
            Arrived,
            Diagnosed,
            Priced,
            Completed,
            ComplaintResolved,
            Cancelled,
        )
    ),
)


class TechnicianNotFound(DomainError):
    code = "technician_not_found"


class NoTechnicianAvailable(DomainError):
    code = "no_technician_available"


async def register_technician(
    writer: OrderWriter, engine: AsyncEngine, technician: TechnicianIn, *, now: datetime
) -> int:
    """Register (or update) a technician, then offer them any order still waiting.

    Returns how many waiting orders were assigned.
    """
    async with engine.begin() as conn:
        await store.upsert_technician(conn, technician.model_dump())
    return await assign_waiting_orders(writer, engine, now=now)


async def assign_waiting_orders(
    writer: OrderWriter, engine: AsyncEngine, *, now: datetime, limit: int = 500
) -> int:
    """Try the engine on orders nobody could take when they arrived (or after a decline)."""
    async with engine.connect() as conn:
        waiting = await store.waiting_orders(conn, limit=limit)
    assigned = 0
    for order_id in waiting:
        try:
            async with engine.begin() as conn:
                if await auto_assign(writer, conn, order_id, now=now) is not None:
                    assigned += 1
        except DomainError as err:
            logger.info("waiting order %s not assigned: %s", order_id, err.code)
    return assigned


async def _order_state(writer: OrderWriter, order_id: UUID) -> OrderState:
    state = await writer.find_state(order_id)
    if state is None:
        raise OrderNotFound(f"order {order_id} not found")
    return state


async def _pick(conn: AsyncConnection, state: OrderState) -> str | None:
    if state.category is None or state.region is None:
        return None
    chosen = choose_technician(
        await store.eligible_candidates(
            conn, category=state.category, region=state.region
        ),
        category=state.category,
        region=state.region,
        declined_by=state.declined_by,
    )
    return None if chosen is None else chosen.technician_id


async def assign_manually(
    writer: OrderWriter,
    engine: AsyncEngine,
    order_id: UUID,
    request: AssignRequest,
    *,
    actor: Actor,
    now: datetime,
    traceparent: str | None,
) -> Recorded:
    """A dispatcher's assignment; without a technician the engine picks one."""
    state = await _order_state(writer, order_id)
    async with engine.connect() as conn:
        technician_id = request.technician_id
        if technician_id is None:
            technician_id = await _pick(conn, state)
            if technician_id is None:
                raise NoTechnicianAvailable(
                    f"no active technician covers {state.category} in {state.region}"
                )
            method = AssignmentMethod.AUTO
        else:
            known = await store.find_technician(conn, technician_id)
            if known is None or not known.active:
                raise TechnicianNotFound(f"no active technician {technician_id}")
            method = AssignmentMethod.MANUAL
    payload = Assigned(
        technician_id=technician_id, method=method, reason=request.reason
    )
    proposed = ProposedEvent(
        event_id=request.id or uuid4(), time=now, actor=actor, data=payload
    )
    digest = fingerprint(
        {
            "order_id": str(order_id),
            **request.model_dump(mode="json", exclude={"expected_version"}),
            "actor": str(actor),
        }
    )
    return await writer.append(
        AppendRequest(
            proposed=proposed,
            order_id=order_id,
            request_digest=digest,
            now=now,
            expected_version=request.expected_version,
            traceparent=traceparent,
            time_from_server=True,
        )
    )


async def auto_assign(
    writer: OrderWriter,
    conn: AsyncConnection,
    order_id: UUID,
    *,
    now: datetime,
) -> Recorded | None:
    """Assign an order that waits for a technician, inside the caller's transaction.

    The event id derives from the order's latest event (its `created` or the
    `declined` that left it waiting), so a redelivered event or a second sweep can
    never assign twice.
    """
    # The one bridge to asyncpg left: the assignment must commit with the consumer's
    # offset, and the consumer's transaction is a SQLAlchemy one.
    driver = await driver_of(conn)
    state = await load_state(driver, order_id)
    if state is None or state.status.value != "created":
        return None
    cause = await event_id_at(driver, order_id, state.version)
    assert cause is not None  # the state was folded up to this version
    technician_id = await _pick(conn, state)
    if technician_id is None:
        logger.info(
            "no technician for order %s (%s, %s)",
            order_id,
            state.category,
            state.region,
        )
        return None
    event_id = uuid5(AUTO_ASSIGNMENT_NAMESPACE, str(cause))
    proposed = ProposedEvent(
        event_id=event_id,
        time=max(now, state.last_event_at),
        actor=AUTO_DISPATCH,
        data=Assigned(
            technician_id=technician_id,
            method=AssignmentMethod.AUTO,
            reason="skills and region match; fewest open orders",
        ),
        causation_id=str(cause),
    )
    async with conn.begin_nested():
        return await writer.append_in(
            driver,
            AppendRequest(
                proposed=proposed,
                order_id=order_id,
                request_digest=fingerprint({"auto_assignment_of": str(cause)}),
                now=max(now, state.last_event_at),
            ),
        )


async def post_event(
    writer: OrderWriter,
    order_id: UUID,
    post: EventPost,
    *,
    actor: Actor,
    now: datetime,
    traceparent: str | None,
) -> Recorded:
    """A technician's or dispatcher's event (idempotent by its id)."""
    return await writer.append(
        post_request(
            order_id,
            post,
            taken=FIELD_POSTS,
            actor=actor,
            now=now,
            traceparent=traceparent,
        )
    )


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One item of a batch: stored (or a retry), or refused (`item` None: unreadable)."""

    index: int
    item: BatchItem | None
    result: Recorded | DomainError


async def apply_batch(
    writer: OrderWriter,
    batch: BatchRequest,
    *,
    actor: Actor,
    now: datetime,
    traceparent: str | None,
) -> list[BatchOutcome]:
    """Apply an offline batch in order; one outcome per event, none stops the rest."""
    outcomes: list[BatchOutcome] = []
    for index, raw in enumerate(batch.events):
        try:
            item = BatchItem.model_validate_json(json.dumps(raw))
        except ValidationError as err:
            invalid = InvalidRequest(
                "The event is not valid.", errors=field_errors(err)
            )
            outcomes.append(BatchOutcome(index, None, invalid))
            continue
        try:
            recorded = await post_event(
                writer,
                item.order_id,
                item,
                actor=actor,
                now=now,
                traceparent=traceparent,
            )
        except DomainError as err:
            outcomes.append(BatchOutcome(index, item, err))
            continue
        outcomes.append(BatchOutcome(index, item, recorded))
    return outcomes
