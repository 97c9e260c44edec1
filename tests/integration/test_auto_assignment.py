"""Auto-assignment end to end: intake's outbox -> Kafka -> dispatch's consumer.

Both services run with their outbox relays, and dispatch with its assignment
consumer, on a real database and broker. Whether the consumer has handled an event
is read from dispatch's own tracking table (`processed_event`), written in the same
transaction as the assignment, so "nothing happened" is observed, not waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final
from uuid import UUID

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.store import tracking
from shared.db.event_store import order_event
from shared.settings import CommonSettings
from tests.builders import random_ref
from tests.http_events import (
    CATEGORY,
    REGION,
    Json,
    Services,
    declined_data,
    event_body,
    started,
)

pytestmark = pytest.mark.integration

WAIT_SECONDS: Final = 30.0
NOBODYS_TRADE: Final = "boiler"


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings, kafka=True) as both:
        yield both


async def events_of(engine: AsyncEngine, order_id: str) -> list[Json]:
    """The order's stored envelopes, in version order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(order_event.c.envelope)
            .where(order_event.c.order_id == UUID(order_id))
            .order_by(order_event.c.version)
        )
        return [dict(row.envelope) for row in rows]


async def handled(engine: AsyncEngine, event_id: str) -> bool:
    """Whether dispatch's consumer has processed this event (committed)."""
    table = tracking.processed_event
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(table.c.event_id).where(table.c.event_id == UUID(event_id))
        )
    return found is not None


async def wait_until_handled(engine: AsyncEngine, event_id: str) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not await handled(engine, event_id):
            await asyncio.sleep(0.05)


async def wait_for_technician(
    services: Services, order_id: str, *, not_: str | None = None
) -> Json:
    """The order once it is assigned (to someone other than `not_`)."""
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            order = await services.order(order_id)
            if order["status"] == "assigned" and order["technician_id"] != not_:
                return order
            await asyncio.sleep(0.05)


async def open_orders_for(services: Services, technician_id: str, count: int) -> None:
    """Give a technician `count` open orders, in a trade nobody is offered."""
    for _ in range(count):
        order_id = await services.create_order(
            random_ref("cust"), category=NOBODYS_TRADE
        )
        response = await services.assign(order_id, technician_id)
        assert response.status_code == 201, response.text


async def decline(services: Services, order_id: str, technician_id: str) -> str:
    response = await services.technician_posts(
        order_id, technician_id, event_body("declined", declined_data(technician_id))
    )
    assert response.status_code == 201, response.text
    event_id: str = response.json()["event"]["id"]
    return event_id


async def created_event_id(engine: AsyncEngine, order_id: str) -> str:
    (created, *_) = await events_of(engine, order_id)
    assert created["type"] == "servicetrail.order.created"
    return str(created["id"])


async def register(services: Services, technicians: dict[str, dict[str, Any]]) -> None:
    for technician_id, profile in technicians.items():
        await services.register_technician(technician_id, **profile)


async def test_the_eligible_technician_with_fewest_open_orders_gets_the_order(
    services: Services, engine: AsyncEngine
) -> None:
    busy, lighter = random_ref("busy"), random_ref("lighter")
    await register(
        services,
        {
            busy: {},
            lighter: {},
            # Free, but each is ineligible for one reason.
            random_ref("inactive"): {"active": False},
            random_ref("fridges"): {"skills": ("refrigerator",)},
            random_ref("elsewhere"): {"regions": ("beijing-haidian",)},
        },
    )
    await open_orders_for(services, busy, 2)
    await open_orders_for(services, lighter, 1)

    order_id = await services.create_order(random_ref("cust"))
    order = await wait_for_technician(services, order_id)

    assert order["technician_id"] == lighter
    assert order["orderversion"] == 2
    created, assigned = await events_of(engine, order_id)
    assert assigned["actor"] == "system:dispatch"
    assert assigned["data"]["method"] == "auto"
    assert assigned["data"]["technician_id"] == lighter
    assert assigned["causationid"] == created["id"]


async def test_a_declined_order_goes_to_someone_else_and_never_back_to_the_decliner(
    services: Services, engine: AsyncEngine
) -> None:
    first, second = random_ref("first"), random_ref("second")
    await register(services, {first: {}, second: {}})
    await open_orders_for(services, second, 2)  # `first` is offered the order first

    order_id = await services.create_order(random_ref("cust"))
    assert (await wait_for_technician(services, order_id))["technician_id"] == first

    # `first` now has fewer open orders than `second`, yet must not get it back.
    declined_by_first = await decline(services, order_id, first)
    order = await wait_for_technician(services, order_id, not_=first)
    assert order["technician_id"] == second
    assert order["orderversion"] == 4
    *_, reassigned = await events_of(engine, order_id)
    assert reassigned["causationid"] == declined_by_first

    # Nobody is left who has not declined: the order waits.
    declined_by_second = await decline(services, order_id, second)
    await wait_until_handled(engine, declined_by_second)
    order = await services.order(order_id)
    assert (order["status"], order["technician_id"], order["orderversion"]) == (
        "created",
        None,
        5,
    )


async def test_an_order_nobody_can_take_stays_created(
    services: Services, engine: AsyncEngine
) -> None:
    await register(
        services,
        {
            random_ref("inactive"): {"active": False},
            random_ref("fridges"): {"skills": ("refrigerator",)},
            random_ref("elsewhere"): {"regions": ("beijing-haidian",)},
        },
    )
    order_id = await services.create_order(random_ref("cust"))
    await wait_until_handled(engine, await created_event_id(engine, order_id))

    order = await services.order(order_id)
    assert (order["status"], order["technician_id"], order["orderversion"]) == (
        "created",
        None,
        1,
    )
    assert len(await events_of(engine, order_id)) == 1


async def test_a_newly_registered_technician_is_offered_a_waiting_order(
    services: Services, engine: AsyncEngine
) -> None:
    order_id = await services.create_order(random_ref("cust"))
    await wait_until_handled(engine, await created_event_id(engine, order_id))
    assert (await services.order(order_id))["status"] == "created"

    newcomer = random_ref("newcomer")
    await services.register_technician(newcomer, skills=(CATEGORY,), regions=(REGION,))

    order = await services.order(order_id)
    assert (order["status"], order["technician_id"]) == ("assigned", newcomer)
