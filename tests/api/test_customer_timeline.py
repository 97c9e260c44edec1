"""The customer's own view: `GET /v1/orders/{id}/timeline` and the order's ETA."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Final
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import CommonSettings
from tests.builders import random_ref
from tests.http_events import (
    Json,
    Order,
    Services,
    accepted_data,
    assert_problem,
    completed_data,
    created,
    event_body,
    rated_data,
    started,
)

# What the customer must never see, wherever it would hide in the body.
FORBIDDEN_KEYS: Final = frozenset(
    {
        "actor",
        "contact_ref",
        "deviceid",
        "devicesequence",
        "traceparent",
        "correlationid",
        "causationid",
    }
)
DEVICE: Final = "phone-of-the-technician-7f3a"


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


@contextlib.asynccontextmanager
async def registry_hidden_from_intake(engine: AsyncEngine) -> AsyncIterator[None]:
    """As if dispatch's registry lived elsewhere: migration 0014's grant taken back."""
    grant = "(technician_id, name) ON dispatch.technician"
    async with engine.begin() as conn:
        await conn.execute(text(f"REVOKE SELECT {grant} FROM servicetrail_intake"))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"GRANT SELECT {grant} TO servicetrail_intake"))


async def completed_and_rated(services: Services) -> Order:
    """An order assigned by hand, accepted from a device, quoted, done and rated."""
    order = await Order.create(services)
    await order.assign()
    accepted = event_body("accepted", accepted_data(order.technician_id))
    accepted |= {"device_id": DEVICE, "device_sequence": 1}
    created(
        await services.technician_posts(order.order_id, order.technician_id, accepted)
    )
    await order.arrive()
    await order.diagnose()
    await order.price(20_000)
    await order.approve()
    await order.technician("completed", completed_data(20_000))
    await order.customer("rated", rated_data(4))
    return order


async def timeline_response(services: Services, order: Order) -> httpx.Response:
    response = await services.intake.get(
        f"/v1/orders/{order.order_id}/timeline",
        headers=services.customer(order.customer_id),
    )
    assert response.status_code == 200, response.text
    return response


async def timeline(services: Services, order: Order) -> Json:
    body: Json = (await timeline_response(services, order)).json()
    return body


async def test_the_customer_sees_every_event_in_order_with_technician_eta_and_prices(
    services: Services,
) -> None:
    order = await completed_and_rated(services)

    body = await timeline(services, order)

    entries = body["entries"]
    assert [e["type"] for e in entries] == [
        "created",
        "assigned",
        "accepted",
        "arrived",
        "diagnosed",
        "priced",
        "quote_approved",
        "completed",
        "rated",
    ]
    assert [e["orderversion"] for e in entries] == list(range(1, 10))
    by_type = {e["type"]: e for e in entries}
    technician = {"technician_id": order.technician_id, "name": "张师傅"}
    assert by_type["assigned"]["technician"] == technician
    accepted = by_type["accepted"]
    assert accepted["technician"] == technician
    eta = datetime.fromisoformat(accepted["time"]) + timedelta(minutes=30)
    assert datetime.fromisoformat(accepted["eta"]) == eta
    assert by_type["created"]["request"]["category"] == "air_conditioner"
    assert by_type["diagnosed"]["diagnosis"]["fault_code"] == "E4"
    quote = by_type["priced"]["quote"]
    assert quote["event_id"] == order.quote_id
    assert (quote["currency"], quote["total"]) == ("CNY", 20_000)
    assert [(i["kind"], i["amount"]) for i in quote["items"]] == [
        ("callout", 3000),
        ("labor", 17_000),
    ]
    assert by_type["quote_approved"]["quote_event_id"] == order.quote_id
    completion = by_type["completed"]["completion"]
    assert (completion["outcome"], completion["total"]) == ("fixed", 20_000)
    assert sum(i["amount"] for i in completion["items"]) == 20_000
    assert by_type["rated"]["rating"]["score"] == 4

    assert body["status"] == "completed"
    assert body["orderversion"] == 9
    assert body["technician"] == technician
    assert datetime.fromisoformat(body["eta"]) == eta
    assert body["final_price"] == {
        "currency": "CNY",
        "total": 20_000,
        "outcome": "fixed",
    }
    assert body["rating"] == 4


async def test_the_timeline_shows_no_actor_contact_device_or_trace_data(
    services: Services,
) -> None:
    order = await completed_and_rated(services)

    raw = (await timeline_response(services, order)).text

    # As a key anywhere, however deep (or as a string value).
    for key in FORBIDDEN_KEYS:
        assert f'"{key}"' not in raw
    # Nor their values: the device, who acted at the company, the evidence store.
    assert DEVICE not in raw
    assert "dispatcher:" not in raw
    assert "s3://" not in raw


async def test_without_the_registry_grant_technician_names_are_null(
    services: Services, engine: AsyncEngine
) -> None:
    order = await completed_and_rated(services)

    async with registry_hidden_from_intake(engine):
        body = await timeline(services, order)

    assert body["technician"] == {"technician_id": order.technician_id, "name": None}


async def test_the_order_view_gives_the_eta_once_accepted(services: Services) -> None:
    order = await Order.create(services)
    await order.assign()
    assert (await order.state())["eta"] is None

    accepted = await order.accept()

    state = await order.state()
    accepted_at = datetime.fromisoformat(accepted["event"]["time"])
    assert datetime.fromisoformat(state["eta"]) == accepted_at + timedelta(minutes=30)


async def test_a_dispatcher_reads_any_orders_timeline(services: Services) -> None:
    order = await Order.create(services)
    response = await services.intake.get(
        f"/v1/orders/{order.order_id}/timeline", headers=services.dispatcher
    )
    assert response.status_code == 200, response.text
    assert [e["type"] for e in response.json()["entries"]] == ["created"]


async def test_another_customer_gets_the_404_of_a_missing_order(
    services: Services,
) -> None:
    order = await Order.create(services)
    stranger = services.customer(random_ref("cust"))

    response = await services.intake.get(
        f"/v1/orders/{order.order_id}/timeline", headers=stranger
    )
    missing = await services.intake.get(
        f"/v1/orders/{uuid4()}/timeline", headers=stranger
    )

    problem = assert_problem(response, 404, "order_not_found")
    assert_problem(missing, 404, "order_not_found")
    assert problem["title"] == missing.json()["title"]


async def test_a_technician_may_not_read_timelines_on_intake(
    services: Services,
) -> None:
    order = await Order.create(services)
    response = await services.intake.get(
        f"/v1/orders/{order.order_id}/timeline",
        headers=services.technician(order.technician_id),
    )
    assert_problem(response, 403, "forbidden")


async def test_a_timeline_without_a_token_is_a_401(services: Services) -> None:
    response = await services.intake.get(f"/v1/orders/{uuid4()}/timeline")
    assert_problem(response, 401, "unauthenticated")


@pytest.mark.parametrize(
    "order_id", ["not-a-uuid", "1" * 300, "%00", "00000000-0000-0000-0000-00000000000g"]
)
async def test_a_malformed_order_id_is_a_422(services: Services, order_id: str) -> None:
    response = await services.intake.get(
        f"/v1/orders/{order_id}/timeline",
        headers=services.customer(random_ref("cust")),
    )
    assert_problem(response, 422, "validation_error")


async def test_the_final_price_sums_a_follow_up_visit_with_the_first(
    services: Services,
) -> None:
    order = await Order.create(services)
    await order.to_follow_up_visit(total=20_000, first_visit=8_000)
    await order.technician("completed", completed_data(12_000))

    body = await timeline(services, order)

    paid = {"currency": "CNY", "total": 20_000, "outcome": "fixed"}
    assert body["final_price"] == paid
    assert (await order.state())["final_price"] == paid
    completions = [e for e in body["entries"] if e["type"] == "completed"]
    assert [c["completion"]["total"] for c in completions] == [8_000, 12_000]
    assert [c["completion"]["outcome"] for c in completions] == [
        "follow_up_required",
        "fixed",
    ]
