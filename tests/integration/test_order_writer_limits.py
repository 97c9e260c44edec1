"""The order writer with a chosen clock: time bounds, the event cap, refusal retention.

The HTTP layer reads the clock; these tests call the writer with the `now` they
need (a completion recorded 100 days ago, a refusal remembered 31 days ago). Every
refusal leaves the event store (events and outbox) as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias
from uuid import UUID, uuid4

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import DriverPool
from shared.db.refusals import refused_event
from shared.domain import errors
from shared.domain.actors import Actor
from shared.domain.events import OrderPayload
from shared.domain.lifecycle import AUTO_DISPATCH, ProposedEvent
from shared.domain.rules import Policy
from shared.events.topics import SOURCE_INTAKE
from shared.orders.request import AppendRequest, Recorded
from shared.orders.writer import DEFAULT_REFUSAL_RETENTION, OrderWriter
from tests.builders import (
    make_accepted,
    make_arrived,
    make_assigned,
    make_cancelled,
    make_completed,
    make_created,
    make_customer,
    make_diagnosed,
    make_priced,
    make_quote_approved,
    make_reopened,
    make_technician,
)
from tests.http_events import count_rows

MINUTE: Final = timedelta(minutes=1)
DEFAULTS: Final = Policy()
LONG_GRACE: Final = Policy(max_event_age=timedelta(days=365))

WriterFactory: TypeAlias = Callable[..., OrderWriter]


@pytest.fixture
def writer_with(driver_pool: DriverPool) -> WriterFactory:
    def build(
        policy: Policy = DEFAULTS,
        *,
        source: str = SOURCE_INTAKE,
        refusal_retention: timedelta = DEFAULT_REFUSAL_RETENTION,
    ) -> OrderWriter:
        return OrderWriter(
            driver_pool,
            policy=policy,
            source=source,
            refusal_retention=refusal_retention,
        )

    return build


@dataclass
class Clocked:
    """One order written through `writer`, each event at the `now` a test picks."""

    writer: OrderWriter
    clock: datetime
    customer: Actor = field(default_factory=make_customer)
    technician: Actor = field(default_factory=make_technician)
    order_id: UUID = field(default_factory=uuid4)
    last: Recorded | None = None

    async def post(
        self,
        actor: Actor,
        data: OrderPayload,
        *,
        now: datetime | None = None,
        time: datetime | None = None,
        event_id: UUID | None = None,
        time_from_server: bool = False,
    ) -> Recorded:
        """Post at `now` (default: a minute after the previous post)."""
        self.clock = now or self.clock + MINUTE
        proposed = ProposedEvent(
            event_id=event_id or uuid4(),
            time=time or self.clock,
            actor=actor,
            data=data,
        )
        self.last = await self.writer.append(
            AppendRequest(
                proposed=proposed,
                order_id=self.order_id,
                request_digest=f"{proposed.event_id}".encode(),
                now=self.clock,
                new_order=isinstance(data, type(make_created())),
                time_from_server=time_from_server,
            )
        )
        return self.last

    async def to_completed(self) -> None:
        tech = self.technician
        await self.post(self.customer, make_created(customer_id=self.customer.id))
        await self.post(AUTO_DISPATCH, make_assigned(tech.id))
        for data in (make_accepted(tech.id), make_arrived(tech.id), make_diagnosed()):
            await self.post(tech, data)
        quote = await self.post(tech, make_priced())
        await self.post(self.customer, make_quote_approved(UUID(quote.envelope["id"])))
        await self.post(tech, make_completed())


async def refusals(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(refused_event))
    return int(count or 0)


async def assert_refused(
    engine: AsyncEngine,
    write: Callable[[], Awaitable[object]],
    refusal: type[errors.DomainError],
) -> errors.DomainError:
    before = await count_rows(engine)
    with pytest.raises(refusal) as err:
        await write()
    assert await count_rows(engine) == before
    return err.value


# --- the reopen window runs on the server's clock --------------------------------


@pytest.mark.parametrize(
    ("policy", "refusal"),
    [
        # Within the grace, the device's early `time` cannot stretch the window.
        pytest.param(LONG_GRACE, errors.WarrantyWindowExpired, id="long-grace"),
        # With the default grace, a `time` 100 days old is not accepted at all.
        pytest.param(Policy(), errors.EventTimeTooOld, id="default-grace"),
    ],
)
async def test_a_reopen_100_days_after_the_completion_is_refused_whatever_its_time(
    writer_with: WriterFactory,
    engine: AsyncEngine,
    policy: Policy,
    refusal: type[errors.DomainError],
) -> None:
    now = datetime.now(UTC)
    order = Clocked(writer_with(policy), clock=now - timedelta(days=100))
    await order.to_completed()
    assert order.last is not None
    just_after = order.clock + timedelta(seconds=1)

    async def reopen() -> Recorded:
        return await order.post(
            order.customer, make_reopened(), now=now, time=just_after
        )

    await assert_refused(engine, reopen, refusal)


async def test_a_reopen_within_the_window_of_the_recorded_completion_is_accepted(
    writer_with: WriterFactory,
) -> None:
    now = datetime.now(UTC)
    order = Clocked(writer_with(LONG_GRACE), clock=now - timedelta(days=29))
    await order.to_completed()
    reopened = await order.post(order.customer, make_reopened(), now=now)
    assert reopened.envelope["type"] == "servicetrail.order.reopened"


async def test_a_post_without_time_is_never_before_the_previous_event(
    writer_with: WriterFactory,
) -> None:
    # The app's clock ran 4 minutes ahead (within the skew) when it created the
    # order; a cancel without `time` a minute later happens "now", which would be
    # before the order's previous event: the server takes that event's time.
    now = datetime.now(UTC)
    order = Clocked(writer_with(), clock=now)
    ahead = now + timedelta(minutes=4)
    await order.post(
        order.customer, make_created(customer_id=order.customer.id), time=ahead
    )
    cancelled = await order.post(
        order.customer, make_cancelled(), now=now + MINUTE, time_from_server=True
    )
    assert datetime.fromisoformat(cancelled.envelope["time"]) == ahead


# --- the cap on events per order --------------------------------------------------


async def test_an_order_at_the_event_cap_refuses_the_next_event_and_stores_nothing(
    writer_with: WriterFactory, engine: AsyncEngine
) -> None:
    order = Clocked(
        writer_with(Policy(max_events_per_order=3)),
        clock=datetime.now(UTC) - timedelta(hours=1),
    )
    tech = order.technician
    await order.post(order.customer, make_created(customer_id=order.customer.id))
    await order.post(AUTO_DISPATCH, make_assigned(tech.id))
    await order.post(tech, make_accepted(tech.id))

    async def arrive() -> Recorded:
        return await order.post(tech, make_arrived(tech.id))

    err = await assert_refused(engine, arrive, errors.OrderEventLimitReached)
    assert err.code == "order_event_limit_reached"


# --- remembered refusals expire ---------------------------------------------------


async def test_a_refusal_older_than_the_retention_no_longer_answers_for_its_id(
    writer_with: WriterFactory, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    then = now - timedelta(days=31)
    writer = writer_with(LONG_GRACE, refusal_retention=timedelta(days=30))
    order = Clocked(writer, clock=then)
    tech = order.technician
    await order.post(order.customer, make_created(customer_id=order.customer.id))
    await order.post(AUTO_DISPATCH, make_assigned(tech.id))
    arrival = uuid4()
    arrived_at = then + timedelta(hours=1)

    async def arrive(at: datetime) -> Recorded:
        return await order.post(
            tech, make_arrived(tech.id), now=at, time=arrived_at, event_id=arrival
        )

    # Still `assigned`: arriving before accepting is refused, and remembered.
    await assert_refused(
        engine, lambda: arrive(then + timedelta(hours=2)), errors.TransitionNotAllowed
    )
    await order.post(tech, make_accepted(tech.id), now=then + MINUTE * 3)
    # Within the retention the first answer stands, though the order moved on.
    await assert_refused(
        engine, lambda: arrive(now - timedelta(days=2)), errors.TransitionNotAllowed
    )
    # Past it, the id is decided afresh: now the arrival fits.
    stored = await arrive(now)
    assert stored.envelope["id"] == str(arrival)
    assert stored.duplicate is False


async def test_refusals_past_the_retention_are_deleted(
    writer_with: WriterFactory, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    writer = writer_with(refusal_retention=timedelta(days=30))
    old = Clocked(writer, clock=now - timedelta(days=31))
    recent = Clocked(writer, clock=now - timedelta(days=29))
    for order in (old, recent):
        await order.post(order.customer, make_created(customer_id=order.customer.id))
        with pytest.raises(errors.TransitionNotAllowed):
            await order.post(order.customer, make_reopened())
    assert await refusals(engine) == 2

    assert await writer.forget_old_refusals(now) == 1
    assert await refusals(engine) == 1


# --- what consumers would refuse is not stored ------------------------------------


async def test_an_envelope_the_consumers_model_refuses_is_not_stored(
    writer_with: WriterFactory, engine: AsyncEngine
) -> None:
    # The Envelope model caps `source` at 200 characters; a service misconfigured
    # with a longer name would publish records no consumer can read.
    writer = writer_with(source="servicetrail." + "x" * 200)
    order = Clocked(writer, clock=datetime.now(UTC))

    async def create() -> Recorded:
        return await order.post(
            order.customer, make_created(customer_id=order.customer.id)
        )

    err = await assert_refused(engine, create, errors.UnreadableEvent)
    assert "source" in err.detail
    # A server-side fault, not a decision about the event: nothing remembered.
    assert await refusals(engine) == 0
