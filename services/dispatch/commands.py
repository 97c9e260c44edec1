"""Dispatch use cases: technicians, assignment and its expiry, technician events,
offline batches, unassignable alerts."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.dispatch import store
from services.dispatch.domain import (
    AssignmentPolicy,
    OrderNeeds,
    assignment_expires_at,
    choose_technician,
    covered_with_room,
    expiry_cutoffs,
)
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
    AssignmentExpired,
    AssignmentMethod,
    Cancelled,
    ComplaintResolved,
    Completed,
    Declined,
    Diagnosed,
    Priced,
)
from shared.domain.lifecycle import (
    AUTO_DISPATCH,
    OrderState,
    OrderStatus,
    ProposedEvent,
)
from shared.events.canonical import fingerprint
from shared.events.envelope import encode, quality_alert_cloudevent
from shared.events.topics import QUALITY_ALERTS, SOURCE_DISPATCH
from shared.orders.posts import EventPost, TakenPosts, field_errors, post_request
from shared.orders.request import AppendRequest, Recorded
from shared.orders.writer import OrderWriter

logger = logging.getLogger(__name__)

AUTO_ASSIGNMENT_NAMESPACE: Final = uuid5(
    NAMESPACE_URL, "urn:servicetrail:auto-assignment"
)
# An expiry's id derives from the assignment it ends (events.md v2): a redelivery,
# a second sweep or a second dispatch instance can never expire it twice.
ASSIGNMENT_EXPIRY_NAMESPACE: Final = uuid5(
    NAMESPACE_URL, "urn:servicetrail:assignment-expiry"
)
# An unassignable alert's id derives from the event that left the order waiting:
# once per waiting episode, however often the engine finds nobody.
UNASSIGNABLE_ALERT_NAMESPACE: Final = uuid5(
    NAMESPACE_URL, "urn:servicetrail:unassignable-alert"
)
UNASSIGNABLE_RULE: Final = "unassignable"

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
    writer: OrderWriter,
    engine: AsyncEngine,
    technician: TechnicianIn,
    *,
    now: datetime,
    policy: AssignmentPolicy,
) -> int:
    """Register (or update) a technician, then offer them any order still waiting.

    Returns how many waiting orders were assigned.
    """
    async with engine.begin() as conn:
        await store.upsert_technician(conn, technician.model_dump())
    return await assign_waiting_orders(writer, engine, now=now, policy=policy)


class OrderStep(Protocol):
    """One automatic write to one order, in the caller's transaction."""

    async def __call__(
        self,
        writer: OrderWriter,
        conn: AsyncConnection,
        order_id: UUID,
        *,
        now: datetime,
        policy: AssignmentPolicy,
    ) -> Recorded | None: ...


async def _apply_each(
    step: OrderStep,
    order_ids: Sequence[UUID],
    *,
    writer: OrderWriter,
    engine: AsyncEngine,
    now: datetime,
    policy: AssignmentPolicy,
) -> int:
    """`step` on each order in its own transaction; how many wrote a new event.

    A duplicate means another sweep (or the consumer) wrote it first; a refusal that
    the order moved on meanwhile (accepted, cancelled, assigned by hand).
    """
    written = 0
    for order_id in order_ids:
        try:
            async with engine.begin() as conn:
                recorded = await step(writer, conn, order_id, now=now, policy=policy)
                if recorded is not None and not recorded.duplicate:
                    written += 1
        except DomainError as err:
            logger.info("order %s left as it is: %s", order_id, err.code)
    return written


class OrderPage(Protocol):
    """One page of order ids after `after` (None: from the start)."""

    async def __call__(
        self, conn: AsyncConnection, *, limit: int, after: UUID | None
    ) -> list[UUID]: ...


async def _apply_to_pages(
    step: OrderStep,
    page: OrderPage,
    *,
    writer: OrderWriter,
    engine: AsyncEngine,
    now: datetime,
    policy: AssignmentPolicy,
    page_size: int,
    pages: int | None,
) -> int:
    """`step` on every order the pages list (at most `pages` of them; None: all)."""
    written, after, read = 0, None, 0
    while pages is None or read < pages:
        async with engine.connect() as conn:
            order_ids = await page(conn, limit=page_size, after=after)
        read += 1
        written += await _apply_each(
            step, order_ids, writer=writer, engine=engine, now=now, policy=policy
        )
        if len(order_ids) < page_size:
            break
        after = order_ids[-1]
    return written


async def assign_waiting_orders(
    writer: OrderWriter,
    engine: AsyncEngine,
    *,
    now: datetime,
    policy: AssignmentPolicy,
    page_size: int = 500,
    pages: int | None = 1,
) -> int:
    """Try the engine on orders waiting for a technician (after a registration: the
    first page; the sweep: all of them, so none is passed over for good).

    Only orders some active technician with room covers are tried: an order nobody
    can take costs nothing per sweep, however many wait.
    """
    async with engine.connect() as conn:
        covered = covered_with_room(await store.active_technicians(conn), policy)

    async def plausible(
        conn: AsyncConnection, *, limit: int, after: UUID | None
    ) -> list[UUID]:
        return await store.waiting_orders(
            conn, limit=limit, after=after, covered=covered
        )

    return await _apply_to_pages(
        auto_assign,
        plausible,
        writer=writer,
        engine=engine,
        now=now,
        policy=policy,
        page_size=page_size,
        pages=pages,
    )


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    expired: int
    assigned: int


async def sweep_assignments(
    writer: OrderWriter,
    engine: AsyncEngine,
    *,
    now: datetime,
    policy: AssignmentPolicy,
    page_size: int = 500,
) -> SweepOutcome:
    """Expire unanswered assignments (offering each order on), then retry every
    waiting order, so no order stays waiting while someone eligible has room."""
    cutoffs = expiry_cutoffs(now, policy)

    async def due(
        conn: AsyncConnection, *, limit: int, after: UUID | None
    ) -> list[UUID]:
        return await store.assignments_due(conn, cutoffs, limit=limit, after=after)

    expired = await _apply_to_pages(
        expire_assignment,
        due,
        writer=writer,
        engine=engine,
        now=now,
        policy=policy,
        page_size=page_size,
        pages=None,
    )
    assigned = await assign_waiting_orders(
        writer, engine, now=now, policy=policy, page_size=page_size, pages=None
    )
    return SweepOutcome(expired=expired, assigned=assigned)


async def _order_state(writer: OrderWriter, order_id: UUID) -> OrderState:
    state = await writer.find_state(order_id)
    if state is None:
        raise OrderNotFound(f"order {order_id} not found")
    return state


def _needs(state: OrderState) -> OrderNeeds | None:
    if state.category is None or state.region is None:
        return None
    return OrderNeeds(
        category=state.category,
        region=state.region,
        declined_by=state.declined_by,
        expired_for=state.expired_for,
        previous_technician=state.first_completed_by,
    )


async def _pick(
    conn: AsyncConnection, state: OrderState, policy: AssignmentPolicy
) -> str | None:
    needs = _needs(state)
    if needs is None:
        return None
    chosen = choose_technician(
        await store.eligible_candidates(
            conn, category=needs.category, region=needs.region
        ),
        needs,
        policy,
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
    policy: AssignmentPolicy,
) -> Recorded:
    """A dispatcher's assignment; without a technician the engine picks one."""
    state = await _order_state(writer, order_id)
    async with engine.connect() as conn:
        technician_id = request.technician_id
        if technician_id is None:
            technician_id = await _pick(conn, state, policy)
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
        event_id=request.id or uuid4(),
        time=request.time or now,
        actor=actor,
        data=payload,
    )
    # Without a `time` the digest is what it was before assignments took one, so a
    # retry of an earlier request still gets its stored answer.
    unsent = {"expected_version"} | ({"time"} if request.time is None else set())
    digest = fingerprint(
        {
            "order_id": str(order_id),
            **request.model_dump(mode="json", exclude=unsent),
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
            time_from_server=request.time is None,
        )
    )


async def auto_assign(
    writer: OrderWriter,
    conn: AsyncConnection,
    order_id: UUID,
    *,
    now: datetime,
    policy: AssignmentPolicy,
) -> Recorded | None:
    """Assign an order that waits for a technician, inside the caller's transaction.

    The event id derives from the order's latest event (its `created`, or the
    `declined`, `assignment_expired` or `reopened` that left it waiting), so a
    redelivered event or a second sweep can never assign twice. Nobody to take it:
    the order's `unassignable` alert is raised (once per waiting episode).
    """
    # The one bridge to asyncpg left: the assignment must commit with the consumer's
    # offset, and the consumer's transaction is a SQLAlchemy one.
    driver = await driver_of(conn)
    state = await load_state(driver, order_id)
    if state is None or state.status is not OrderStatus.CREATED:
        return None
    cause = await event_id_at(driver, order_id, state.version)
    assert cause is not None  # the state was folded up to this version
    technician_id = await _pick(conn, state, policy)
    if technician_id is None:
        logger.info(
            "no technician for order %s (%s, %s)",
            order_id,
            state.category,
            state.region,
        )
        await _raise_unassignable(conn, state, cause=cause, now=now)
        return None
    previous = technician_id == state.first_completed_by
    event_id = uuid5(AUTO_ASSIGNMENT_NAMESPACE, str(cause))
    proposed = ProposedEvent(
        event_id=event_id,
        time=max(now, state.last_event_at),
        actor=AUTO_DISPATCH,
        data=Assigned(
            technician_id=technician_id,
            method=AssignmentMethod.AUTO,
            reason=(
                "the technician of the first completion, with room"
                if previous
                else "skills and region match; best score, then fewest open orders"
            ),
        ),
        causation_id=str(cause),
    )
    async with conn.begin_nested():
        recorded = await writer.append_in(
            driver,
            AppendRequest(
                proposed=proposed,
                order_id=order_id,
                request_digest=fingerprint({"auto_assignment_of": str(cause)}),
                now=max(now, state.last_event_at),
            ),
        )
    await clear_unassignable(conn, order_id, now=now)
    return recorded


async def expire_assignment(
    writer: OrderWriter,
    conn: AsyncConnection,
    order_id: UUID,
    *,
    now: datetime,
    policy: AssignmentPolicy,
) -> Recorded | None:
    """End an assignment left unanswered past its accept target, and offer the order
    to the next candidate, in the caller's transaction.

    None when the order is not (or no longer) assigned, or its target has not passed.
    """
    driver = await driver_of(conn)
    state = await load_state(driver, order_id)
    if (
        state is None
        or state.status is not OrderStatus.ASSIGNED
        or state.technician_id is None
        or state.assigned_event_id is None
        or state.assigned_at is None
        or assignment_expires_at(state.assigned_at, state.urgency, policy) > now
    ):
        return None
    assignment = state.assigned_event_id
    time = max(now, state.last_event_at)
    proposed = ProposedEvent(
        event_id=uuid5(ASSIGNMENT_EXPIRY_NAMESPACE, str(assignment)),
        time=time,
        actor=AUTO_DISPATCH,
        data=AssignmentExpired(
            technician_id=state.technician_id, assigned_event_id=assignment
        ),
        causation_id=str(assignment),
    )
    async with conn.begin_nested():
        recorded = await writer.append_in(
            driver,
            AppendRequest(
                proposed=proposed,
                order_id=order_id,
                request_digest=fingerprint({"expiry_of": str(assignment)}),
                now=time,
            ),
        )
    if not recorded.duplicate:
        logger.info(
            "assignment %s of order %s to %s expired unanswered",
            assignment,
            order_id,
            state.technician_id,
        )
        try:
            await auto_assign(writer, conn, order_id, now=now, policy=policy)
        except DomainError as err:
            # The expiry stands; the consumer (reacting to it) or the next sweep
            # offers the order on.
            logger.info("order %s not reassigned yet: %s", order_id, err.code)
    return recorded


# --- unassignable alerts ------------------------------------------------------------


def unassignable_alert(
    name: str, *, alert_id: UUID, order_id: UUID, now: datetime, waiting: bool
) -> dict[str, object]:
    """An alert in metrics' shape (services/metrics/alerts.py), scoped to the order.

    Its measured value is the number of technicians able to take the order (0 while
    it is raised) against a threshold of one.
    """
    scope = f"order:{order_id}"
    return quality_alert_cloudevent(
        name,
        subject=scope,
        time=now,
        source=SOURCE_DISPATCH,
        event_id=uuid5(UNASSIGNABLE_ALERT_NAMESPACE, f"{name}/{alert_id}"),
        data={
            "alert_id": str(alert_id),
            "rule": UNASSIGNABLE_RULE,
            "indicator": "technicians_able",
            "statistic": "value",
            "scope": scope,
            "value": 0.0 if waiting else None,
            "threshold": 1.0,
            "samples": 0,
            "window_seconds": 1,
        },
    )


async def _raise_unassignable(
    conn: AsyncConnection, state: OrderState, *, cause: UUID, now: datetime
) -> None:
    alert_id = uuid5(UNASSIGNABLE_ALERT_NAMESPACE, str(cause))
    waiting = store.WaitingOrder(
        order_id=state.order_id,
        category=state.category,
        region=state.region,
        urgency=None if state.urgency is None else state.urgency.value,
    )
    if await store.raise_unassignable(conn, waiting, alert_id=alert_id, now=now):
        event = unassignable_alert(
            "alert_raised",
            alert_id=alert_id,
            order_id=state.order_id,
            now=now,
            waiting=True,
        )
        await store.publish(
            conn, topic=QUALITY_ALERTS, key=str(event["subject"]), value=encode(event)
        )
        logger.info("unassignable alert %s raised for %s", alert_id, state.order_id)


async def clear_unassignable(
    conn: AsyncConnection, order_id: UUID, *, now: datetime
) -> None:
    """Clear the order's open unassignable alert, if any (assigned or cancelled)."""
    alert_id = await store.clear_unassignable(conn, order_id, now=now)
    if alert_id is None:
        return
    event = unassignable_alert(
        "alert_cleared", alert_id=alert_id, order_id=order_id, now=now, waiting=False
    )
    await store.publish(
        conn, topic=QUALITY_ALERTS, key=str(event["subject"]), value=encode(event)
    )
    logger.info("unassignable alert %s cleared for %s", alert_id, order_id)


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
