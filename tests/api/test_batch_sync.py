"""Dispatch's offline sync `POST /v1/events:batch`: per-event results, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final
from uuid import uuid4

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.http_events import (
    MANUAL_ONLY,
    Json,
    Order,
    Rows,
    Services,
    accepted_data,
    arrived_data,
    assert_problem,
    cancelled_data,
    count_rows,
    diagnosed_data,
    event_body,
    priced_data,
    started,
)

BATCH: Final = "/v1/events:batch"


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


async def assigned_order(services: Services, technician_id: str) -> Order:
    """A new order assigned by hand to `technician_id`."""
    order = await Order.create(services)
    order.technician_id = technician_id
    await services.register_technician(technician_id, skills=(MANUAL_ONLY,))
    await order.assign()
    return order


def item(order: Order, type_: str, data: Json, **kwargs: Any) -> Json:
    """One batch event: an event post plus its order id."""
    return {**event_body(type_, data, **kwargs), "order_id": order.order_id}


async def post_batch(
    services: Services, technician_id: str, events: list[Json]
) -> httpx.Response:
    return await services.dispatch.post(
        BATCH, headers=services.technician(technician_id), json={"events": events}
    )


def stored(index: int, body: Json, version: int) -> Json:
    return {
        "index": index,
        "id": body["id"],
        "order_id": body["order_id"],
        "status": "stored",
        "orderversion": version,
        "problem": None,
    }


def duplicate(index: int, body: Json, version: int) -> Json:
    return {**stored(index, body, version), "status": "duplicate"}


def rejected(result: Json, index: int, status: int, code: str) -> Json:
    """The problem of a rejected result, after checking its shape."""
    assert result["index"] == index
    assert result["status"] == "rejected", result
    assert result["orderversion"] is None
    problem: Json = result["problem"]
    assert problem["status"] == status, problem
    assert problem["type"] == f"urn:servicetrail:problem:{code}", problem
    assert problem["detail"]
    return problem


async def test_a_batch_reports_each_event_and_applies_the_valid_ones_in_order(
    services: Services, engine: AsyncEngine
) -> None:
    technician = "tech-offline"
    mine = await assigned_order(services, technician)
    also_mine = await assigned_order(services, technician)
    theirs = await assigned_order(services, "tech-other")
    synced_before = item(mine, "accepted", accepted_data(technician))
    response = await services.technician_posts(
        mine.order_id,
        technician,
        {k: v for k, v in synced_before.items() if k != "order_id"},
    )
    assert response.status_code == 201, response.text
    before = await count_rows(engine)

    arrive = item(mine, "arrived", arrived_data(technician))
    bad_diagnosis = item(mine, "diagnosed", {**diagnosed_data(), "remote": "yes"})
    not_my_order = item(theirs, "accepted", accepted_data(technician))
    diagnose = item(mine, "diagnosed", diagnosed_data())
    price = item(mine, "priced", priced_data(18_000))
    accept_other = item(also_mine, "accepted", accepted_data(technician))
    no_order_id = event_body("arrived", arrived_data(technician))
    reused_id = {**arrive, "data": {"technician_id": technician}}
    cancel = item(also_mine, "cancelled", cancelled_data())
    arrive_other = item(also_mine, "arrived", arrived_data(technician))
    events = [
        synced_before,  # 0: stored by an earlier sync
        arrive,  # 1
        arrive,  # 2: the same event twice in one batch
        bad_diagnosis,  # 3: invalid data
        not_my_order,  # 4: someone else's order
        diagnose,  # 5: needs 1 applied first
        price,  # 6
        accept_other,  # 7
        no_order_id,  # 8: not a batch item at all
        reused_id,  # 9: the id of 1 with other content
        cancel,  # 10: not a technician's event
        arrive_other,  # 11: needs 7 applied first
    ]

    response = await post_batch(services, technician, events)

    assert response.status_code == 200, response.text
    results: list[Json] = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    assert results[0] == duplicate(0, synced_before, 3)
    assert results[1] == stored(1, arrive, 4)
    assert results[2] == duplicate(2, arrive, 4)
    problem = rejected(results[3], 3, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["data.remote"]
    assert results[3]["id"] == bad_diagnosis["id"]
    rejected(results[4], 4, 404, "order_not_found")
    assert results[4]["order_id"] == theirs.order_id
    assert results[5] == stored(5, diagnose, 5)
    assert results[6] == stored(6, price, 6)
    assert results[7] == stored(7, accept_other, 3)
    problem = rejected(results[8], 8, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["order_id"]
    assert results[8]["id"] is None
    rejected(results[9], 9, 409, "duplicate_event_conflict")
    rejected(results[10], 10, 403, "actor_not_allowed")
    assert results[11] == stored(11, arrive_other, 4)

    assert await count_rows(engine) == Rows(before.events + 5, before.outbox + 5)
    assert [(await o.state())["status"] for o in (mine, also_mine, theirs)] == [
        "quoted",
        "on_site",
        "assigned",
    ]
    assert (await theirs.state())["orderversion"] == 2


async def test_a_batch_sent_twice_is_all_duplicates_the_second_time(
    services: Services, engine: AsyncEngine
) -> None:
    technician = "tech-retry"
    order = await assigned_order(services, technician)
    events = [
        item(order, "accepted", accepted_data(technician)),
        item(order, "arrived", arrived_data(technician)),
    ]
    first = await post_batch(services, technician, events)
    assert [r["status"] for r in first.json()["results"]] == ["stored", "stored"]
    after_first = await count_rows(engine)

    second = await post_batch(services, technician, events)

    assert second.status_code == 200, second.text
    assert [r["status"] for r in second.json()["results"]] == ["duplicate"] * 2
    assert [r["orderversion"] for r in second.json()["results"]] == [3, 4]
    assert await count_rows(engine) == after_first


def minimal(order: Order, type_: str, data: Json) -> Json:
    """A batch item without id or time: the smallest body an event can have."""
    return {"order_id": order.order_id, "type": type_, "data": data}


async def test_a_batch_of_500_events_is_applied_event_by_event(
    services: Services, engine: AsyncEngine
) -> None:
    technician = "t5"
    order = await assigned_order(services, technician)
    before = await count_rows(engine)
    # Minimal items, so that 500 of them fit in the 64 KiB body limit.
    events = [
        minimal(order, "accepted", {"technician_id": technician, "eta_minutes": 1})
    ]
    events += [minimal(order, "arrived", {"technician_id": technician})] * 499
    response = await post_batch(services, technician, events)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["stored"] * 2 + ["rejected"] * 498
    assert {r["problem"]["status"] for r in results[2:]} == {409}
    assert await count_rows(engine) == Rows(before.events + 2, before.outbox + 2)


async def test_a_batch_of_501_events_is_a_422_and_stores_nothing(
    services: Services, engine: AsyncEngine
) -> None:
    technician = "t5"
    order = await assigned_order(services, technician)
    before = await count_rows(engine)
    events = [
        minimal(order, "accepted", {"technician_id": technician, "eta_minutes": 1})
    ]
    events += [minimal(order, "arrived", {"technician_id": technician})] * 500
    response = await post_batch(services, technician, events)
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["events"]
    assert await count_rows(engine) == before


async def test_a_batch_of_500_events_with_their_ids_fits_the_body_limit(
    services: Services, engine: AsyncEngine
) -> None:
    technician = "tech-500"
    order = await assigned_order(services, technician)
    events = [item(order, "accepted", accepted_data(technician))]
    events += [item(order, "arrived", {"technician_id": technician})] * 499
    response = await post_batch(services, technician, events)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == (
        ["stored"] * 2 + ["duplicate"] * 498
    )


async def test_an_empty_batch_is_a_422(services: Services) -> None:
    response = await post_batch(services, "tech-empty", [])
    assert_problem(response, 422, "validation_error")


async def test_only_technicians_sync_batches(
    services: Services, engine: AsyncEngine
) -> None:
    order = await assigned_order(services, "tech-role")
    events = [item(order, "accepted", accepted_data("tech-role"))]
    before = await count_rows(engine)
    for role in (Role.CUSTOMER, Role.DISPATCHER):
        response = await services.dispatch.post(
            BATCH, headers=services.auth(role, "tech-role"), json={"events": events}
        )
        assert_problem(response, 403, "forbidden")
    assert await count_rows(engine) == before


async def test_a_batch_event_for_an_unknown_order_is_rejected_with_404(
    services: Services,
) -> None:
    events = [
        {
            **event_body("accepted", accepted_data("tech-lost")),
            "order_id": str(uuid4()),
        }
    ]
    response = await post_batch(services, "tech-lost", events)
    assert response.status_code == 200, response.text
    rejected(response.json()["results"][0], 0, 404, "order_not_found")


# --- a batch against the rate limit -----------------------------------------------

LIMIT: Final = 10


@pytest_asyncio.fixture(loop_scope="session")
async def limited(settings: CommonSettings) -> AsyncIterator[Services]:
    """Intake and dispatch allowing each caller 10 requests a minute."""
    async with started(
        settings.model_copy(update={"rate_limit": f"{LIMIT}/minute"})
    ) as both:
        yield both


def arrivals(order: Order, count: int) -> list[Json]:
    """`count` distinct events of the order (one accepted, then arrivals)."""
    technician = order.technician_id
    first = item(order, "accepted", accepted_data(technician))
    return [first] + [
        item(order, "arrived", arrived_data(technician)) for _ in range(count - 1)
    ]


async def test_a_batch_of_more_events_than_the_budget_is_a_429_and_stores_nothing(
    limited: Services, engine: AsyncEngine
) -> None:
    order = await assigned_order(limited, "t-greedy")
    before = await count_rows(engine)
    response = await post_batch(limited, "t-greedy", arrivals(order, LIMIT + 1))
    assert_problem(response, 429, "too_many_requests")
    assert int(response.headers["Retry-After"]) >= 1
    assert await count_rows(engine) == before


async def test_batches_spend_the_budget_by_their_events(
    limited: Services, engine: AsyncEngine
) -> None:
    technician = "t-two-batches"
    first, second = [await assigned_order(limited, technician) for _ in range(2)]
    response = await post_batch(limited, technician, arrivals(first, 5))
    assert response.status_code == 200, response.text
    before = await count_rows(engine)

    response = await post_batch(limited, technician, arrivals(second, LIMIT - 5 + 1))

    assert_problem(response, 429, "too_many_requests")
    assert await count_rows(engine) == before
    assert (await second.state())["status"] == "assigned"
