"""Dispatch use cases: technicians, assignment, technician events, offline batches."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Final
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.dispatch import store
from services.dispatch.domain import choose_technician
from services.dispatch.schemas import (
    AssignRequest,
    BatchItem,
    BatchRequest,
    BatchResult,
    TechnicianIn,
)
from shared.db.engine import driver_of
from shared.db.event_store import load_stream
from shared.db.order_writer import OrderWriter, Recorded
from shared.domain.actors import Actor
from shared.domain.errors import DomainError, OrderNotFound
from shared.domain.events import Assigned, AssignmentMethod
from shared.domain.lifecycle import AUTO_DISPATCH, OrderState, ProposedEvent, fold
from shared.events.canonical import fingerprint
from shared.http.event_posts import parse_post, record_post
from shared.http.problems import (
    Problem,
    domain_problem,
    problem_body,
    validation_errors,
)

logger = logging.getLogger(__name__)

AUTO_ASSIGNMENT_NAMESPACE: Final = uuid5(
    NAMESPACE_URL, "urn:servicetrail:auto-assignment"
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


async def _order_state(conn: AsyncConnection, order_id: UUID) -> OrderState:
    state = fold(s.event for s in await load_stream(await driver_of(conn), order_id))
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
    async with engine.connect() as conn:
        state = await _order_state(conn, order_id)
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
        proposed,
        order_id=order_id,
        request_digest=digest,
        now=now,
        expected_version=request.expected_version,
        traceparent=traceparent,
        time_from_server=True,
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
    driver = await driver_of(conn)
    stream = await load_stream(driver, order_id)
    state = fold(s.event for s in stream)
    if state is None or state.status.value != "created":
        return None
    cause = stream[-1].event.event_id
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
            proposed,
            order_id=order_id,
            request_digest=fingerprint({"auto_assignment_of": str(cause)}),
            now=max(now, state.last_event_at),
        )


def _rejected(index: int, item: BatchItem | None, body: dict[str, Any]) -> BatchResult:
    return BatchResult(
        index=index,
        id=None if item is None else item.id,
        order_id=None if item is None else item.order_id,
        status="rejected",
        problem=body,
    )


async def apply_batch(
    writer: OrderWriter,
    batch: BatchRequest,
    *,
    allowed: frozenset[str],
    actor: Actor,
    now: datetime,
    traceparent: str | None,
) -> list[BatchResult]:
    """Apply an offline batch in order; one result per event, none stops the rest."""
    results: list[BatchResult] = []
    for index, raw in enumerate(batch.events):
        try:
            item = BatchItem.model_validate_json(json.dumps(raw))
        except ValidationError as err:
            body = problem_body(
                422,
                "validation_error",
                "The event is not valid.",
                errors=validation_errors(err),
            )
            results.append(_rejected(index, None, body))
            continue
        try:
            parsed = parse_post(item, allowed=allowed, service="dispatch")
            recorded = await record_post(
                writer,
                item.order_id,
                parsed,
                actor=actor,
                now=now,
                traceparent=traceparent,
            )
        except Problem as problem:
            body = problem_body(
                problem.status, problem.code, problem.detail, errors=problem.errors
            )
            results.append(_rejected(index, item, body))
            continue
        except DomainError as err:
            results.append(_rejected(index, item, domain_problem(err)[1]))
            continue
        results.append(
            BatchResult(
                index=index,
                id=UUID(str(recorded.envelope["id"])),
                order_id=recorded.order_id,
                status="duplicate" if recorded.duplicate else "stored",
                orderversion=recorded.version,
            )
        )
    return results
