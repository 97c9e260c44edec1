"""Intake's read side and contact erasure: who sees an order, paging, GDPR erasure."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import uuid4

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.store import contact
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.builders import random_ref
from tests.http_events import (
    Headers,
    Json,
    Services,
    assert_problem,
    cancelled_data,
    count_rows,
    event_body,
    started,
)

ORDERS: Final = "/v1/orders"


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


async def contacts_of(engine: AsyncEngine, customer_id: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(contact)
            .where(contact.c.customer_id == customer_id)
        )
    return int(count or 0)


async def all_pages(
    services: Services, headers: Headers, *, limit: int, query: str = ""
) -> list[list[str]]:
    """The order ids of every page, following `next_cursor` to the end."""
    pages: list[list[str]] = []
    params: dict[str, str | int] = {"limit": limit}
    if query:
        params["customer_id"] = query
    while True:
        response = await services.intake.get(ORDERS, headers=headers, params=params)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        pages.append([item["order_id"] for item in body["items"]])
        if body["next_cursor"] is None:
            return pages
        params["cursor"] = body["next_cursor"]
        assert len(pages) < 10, "the cursor does not advance"


# --- one order ----------------------------------------------------------------------


async def test_the_orders_customer_reads_its_current_state(services: Services) -> None:
    customer = random_ref("cust")
    order_id = await services.create_order(customer)
    response = await services.intake.get(
        f"{ORDERS}/{order_id}", headers=services.customer(customer)
    )
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["order_id"] == order_id
    assert order["status"] == "created"
    assert order["orderversion"] == 1
    assert order["customer_id"] == customer
    assert order["technician_id"] is None


async def test_another_customer_reading_an_order_gets_404(services: Services) -> None:
    order_id = await services.create_order(random_ref("cust"))
    response = await services.intake.get(
        f"{ORDERS}/{order_id}", headers=services.customer(random_ref("cust"))
    )
    problem = assert_problem(response, 404, "order_not_found")
    # Exactly what an order that does not exist gets: nothing tells them apart.
    missing = await services.intake.get(
        f"{ORDERS}/{uuid4()}", headers=services.customer(random_ref("cust"))
    )
    assert_problem(missing, 404, "order_not_found")
    assert problem["title"] == missing.json()["title"]


async def test_a_technician_may_not_read_orders_on_intake(services: Services) -> None:
    order_id = await services.create_order(random_ref("cust"))
    response = await services.intake.get(
        f"{ORDERS}/{order_id}", headers=services.technician(random_ref("tech"))
    )
    assert_problem(response, 403, "forbidden")


async def test_a_dispatcher_reads_any_order(services: Services) -> None:
    order_id = await services.create_order(random_ref("cust"))
    assert (await services.order(order_id))["status"] == "created"


# --- listings -----------------------------------------------------------------------


async def test_listing_pages_through_five_orders_newest_first_without_gaps(
    services: Services,
) -> None:
    customer = random_ref("cust")
    created = [await services.create_order(customer) for _ in range(5)]
    await services.create_order(random_ref("cust"))  # someone else's: never listed

    pages = await all_pages(services, services.customer(customer), limit=2)

    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [order_id for page in pages for order_id in page]
    assert listed == list(reversed(created))


async def test_listing_orders_created_at_the_same_instant_pages_by_id(
    services: Services,
) -> None:
    customer = random_ref("cust")
    same = datetime.now(UTC) - timedelta(minutes=1)
    created = {
        await services.create_order(customer, time=same.isoformat()) for _ in range(5)
    }

    pages = await all_pages(services, services.customer(customer), limit=2)

    listed = [order_id for page in pages for order_id in page]
    assert len(listed) == len(set(listed)) == 5
    assert set(listed) == created
    assert listed == sorted(listed, reverse=True)


async def test_a_dispatcher_lists_one_customers_orders_by_customer_id(
    services: Services,
) -> None:
    customer = random_ref("cust")
    created = [await services.create_order(customer) for _ in range(3)]
    await services.create_order(random_ref("cust"))
    pages = await all_pages(services, services.dispatcher, limit=2, query=customer)
    assert [order_id for page in pages for order_id in page] == created[::-1]


async def test_a_customer_listing_another_customers_orders_is_forbidden(
    services: Services,
) -> None:
    response = await services.intake.get(
        ORDERS,
        headers=services.customer(random_ref("cust")),
        params={"customer_id": random_ref("cust")},
    )
    assert_problem(response, 403, "forbidden")


async def test_listing_by_status_and_region_keeps_only_matching_orders(
    services: Services,
) -> None:
    customer = random_ref("cust")
    kept, cancelled, elsewhere = [
        await services.create_order(customer, region=region)
        for region in ("shanghai-pudong", "shanghai-pudong", "beijing-haidian")
    ]
    stopped = await services.customer_posts(
        cancelled, customer, event_body("cancelled", cancelled_data())
    )
    assert stopped.status_code == 201, stopped.text

    async def listed(**params: str | list[str]) -> list[str]:
        response = await services.intake.get(
            ORDERS,
            headers=services.dispatcher,
            params={"customer_id": customer, **params},
        )
        assert response.status_code == 200, response.text
        return [item["order_id"] for item in response.json()["items"]]

    assert await listed(status="cancelled") == [cancelled]
    assert await listed(region="shanghai-pudong") == [cancelled, kept]
    assert await listed(region="beijing-haidian") == [elsewhere]
    assert await listed(status="cancelled", region="beijing-haidian") == []
    # Repeated: any of them.
    both = await listed(status=["cancelled", "created", "assigned"])
    assert set(both) == {kept, cancelled, elsewhere}
    assert await listed(region="nowhere") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"status": "lost"}, "status", id="unknown-status"),
        pytest.param({"status": ""}, "status", id="empty-status"),
        pytest.param({"region": ""}, "region", id="empty-region"),
        pytest.param({"region": "x" * 201}, "region", id="long-region"),
        pytest.param({"region": "a\x00b"}, "region", id="nul-in-region"),
    ],
)
async def test_a_malformed_status_or_region_filter_is_a_422(
    services: Services, params: dict[str, str], field: str
) -> None:
    response = await services.intake.get(
        ORDERS, headers=services.dispatcher, params=params
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [error["field"].split(".")[:2] for error in problem["errors"]] == [
        ["query", field]
    ]


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not-a-cursor", id="not-base64-json"),
        pytest.param(_cursor(), id="empty-list"),
        pytest.param("bnVsbA==", id="null"),
        pytest.param(_cursor(1, 2), id="numbers"),
        pytest.param(_cursor("2026-03-02T09:00:00+00:00", "x"), id="not-a-uuid"),
    ],
)
async def test_a_cursor_the_service_did_not_issue_is_a_422(
    services: Services, cursor: str
) -> None:
    response = await services.intake.get(
        ORDERS,
        headers=services.customer(random_ref("cust")),
        params={"cursor": cursor},
    )
    assert_problem(response, 422, "invalid_cursor")


@pytest.mark.parametrize("limit", [0, 1001])
async def test_a_limit_outside_1_to_1000_is_a_422(
    services: Services, limit: int
) -> None:
    response = await services.intake.get(
        ORDERS,
        headers=services.customer(random_ref("cust")),
        params={"limit": limit},
    )
    assert_problem(response, 422, "validation_error")


# --- contact erasure ----------------------------------------------------------------


async def test_an_admin_erases_a_customers_contacts_and_the_orders_stay_intact(
    services: Services, engine: AsyncEngine
) -> None:
    customer = random_ref("cust")
    other = random_ref("cust")
    orders = [await services.create_order(customer) for _ in range(2)]
    await services.create_order(other)
    before = [await services.order(order_id) for order_id in orders]
    rows = await count_rows(engine)
    assert await contacts_of(engine, customer) == 2

    response = await services.intake.delete(
        f"/v1/customers/{customer}/contact",
        headers=services.auth(Role.ADMIN, "admin-1"),
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"customer_id": customer, "contacts_erased": 2}
    assert await contacts_of(engine, customer) == 0
    assert await contacts_of(engine, other) == 1
    assert await count_rows(engine) == rows
    assert [await services.order(order_id) for order_id in orders] == before


async def test_erasing_a_customer_without_contacts_erases_nothing(
    services: Services,
) -> None:
    customer = random_ref("cust")
    response = await services.intake.delete(
        f"/v1/customers/{customer}/contact",
        headers=services.auth(Role.ADMIN, "admin-1"),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"customer_id": customer, "contacts_erased": 0}


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.DISPATCHER, Role.AUDITOR])
async def test_contact_erasure_by_anyone_but_an_admin_is_forbidden(
    services: Services, engine: AsyncEngine, role: Role
) -> None:
    customer = random_ref("cust")
    await services.create_order(customer)
    response = await services.intake.delete(
        f"/v1/customers/{customer}/contact", headers=services.auth(role, customer)
    )
    assert_problem(response, 403, "forbidden")
    assert await contacts_of(engine, customer) == 1
