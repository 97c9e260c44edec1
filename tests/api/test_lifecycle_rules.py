"""Every refusal of an event post, over HTTP: its problem, and an unchanged store.

Intake and dispatch run on one real database without Kafka (no relay, no consumer);
orders are assigned by hand. Each refusal counts the rows of the event store and its
outbox before and after: a refused event leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.store import contact
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.builders import random_ref
from tests.http_bodies import new_order_body
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
    complaint_filed_data,
    completed_data,
    count_rows,
    created,
    declined_data,
    diagnosed_data,
    event_body,
    priced_data,
    rated_data,
    started,
)

MAX_BODY: Final = 64 * 1024


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


@pytest_asyncio.fixture(loop_scope="session")
async def order(services: Services) -> Order:
    """A new order, assigned to its technician by hand (status `assigned`)."""
    new = await Order.create(services)
    await new.assign()
    return new


async def technician_posts(order: Order, body: Json) -> httpx.Response:
    return await order.services.technician_posts(
        order.order_id, order.technician_id, body
    )


async def customer_posts(order: Order, body: Json) -> httpx.Response:
    return await order.services.customer_posts(order.order_id, order.customer_id, body)


# --- the lifecycle's own rules -------------------------------------------------------


async def test_a_transition_the_lifecycle_does_not_allow_is_a_409_and_stores_nothing(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    # Still `assigned`: the technician must accept before arriving.
    response = await technician_posts(
        order, event_body("arrived", arrived_data(order.technician_id))
    )
    assert_problem(response, 409, "transition_not_allowed")
    assert await count_rows(engine) == before
    assert (await order.state())["status"] == "assigned"


async def test_a_stale_expected_version_is_a_409_with_the_current_version(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await technician_posts(
        order,
        event_body("accepted", accepted_data(order.technician_id), expected_version=1),
    )
    problem = assert_problem(response, 409, "version_conflict")
    assert problem["current_version"] == 2
    assert await count_rows(engine) == before


async def test_the_current_expected_version_is_accepted(order: Order) -> None:
    accepted = await order.technician(
        "accepted", accepted_data(order.technician_id), expected_version=2
    )
    assert accepted["orderversion"] == 3


async def test_an_event_time_before_the_previous_event_is_a_422_and_stores_nothing(
    order: Order, engine: AsyncEngine
) -> None:
    last = datetime.fromisoformat((await order.state())["times"]["last_event_at"])
    before = await count_rows(engine)
    response = await technician_posts(
        order,
        event_body(
            "accepted",
            accepted_data(order.technician_id),
            time=last - timedelta(seconds=1),
        ),
    )
    assert_problem(response, 422, "event_time_before_previous")
    assert await count_rows(engine) == before


async def test_an_event_time_at_the_previous_event_is_accepted(order: Order) -> None:
    last = datetime.fromisoformat((await order.state())["times"]["last_event_at"])
    await order.technician("accepted", accepted_data(order.technician_id), time=last)


async def test_an_event_time_over_five_minutes_ahead_is_a_422_and_stores_nothing(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await technician_posts(
        order,
        event_body(
            "accepted",
            accepted_data(order.technician_id),
            time=datetime.now(UTC) + timedelta(minutes=5, seconds=30),
        ),
    )
    assert_problem(response, 422, "event_time_in_future")
    assert await count_rows(engine) == before


# --- no hidden fees ---------------------------------------------------------------


async def test_a_completion_over_five_percent_above_the_approved_quote_is_a_422(
    services: Services, engine: AsyncEngine
) -> None:
    order = await Order.create(services)
    await order.to_approved(total=20_000)
    before = await count_rows(engine)
    response = await technician_posts(
        order, event_body("completed", completed_data(21_001))
    )
    assert_problem(response, 422, "price_exceeds_approved_quote")
    assert await count_rows(engine) == before
    assert (await order.state())["status"] == "approved"


async def test_a_completion_exactly_five_percent_above_the_approved_quote_is_accepted(
    services: Services,
) -> None:
    order = await Order.create(services)
    await order.to_approved(total=20_000)
    done = await order.technician("completed", completed_data(21_000))
    assert done["event"]["data"]["final_total"] == 21_000
    state = await order.state()
    assert state["status"] == "completed"
    assert state["final_price"] == {
        "currency": "CNY",
        "total": 21_000,
        "outcome": "fixed",
    }


async def test_a_follow_up_visit_completes_on_site_under_the_approved_quote(
    services: Services, engine: AsyncEngine
) -> None:
    order = await Order.create(services)
    await order.to_follow_up_visit(total=20_000, first_visit=8_000)
    before = await count_rows(engine)
    # 8 000 + 13 001 is over 105% of 20 000: the visits are held to it together.
    response = await technician_posts(
        order, event_body("completed", completed_data(13_001))
    )
    assert_problem(response, 422, "price_exceeds_approved_quote")
    assert "8000 charged on earlier visits" in response.json()["detail"]
    assert await count_rows(engine) == before
    await order.technician("completed", completed_data(13_000))
    assert (await order.state())["status"] == "completed"


async def test_completing_on_site_without_a_follow_up_is_a_409_and_stores_nothing(
    order: Order, engine: AsyncEngine
) -> None:
    await order.accept()
    await order.arrive()
    before = await count_rows(engine)
    response = await technician_posts(order, event_body("completed", completed_data(0)))
    assert_problem(response, 409, "transition_not_allowed")
    assert await count_rows(engine) == before


# --- idempotency and remembered refusals --------------------------------------------


async def test_a_retry_with_the_same_id_and_content_returns_the_stored_event_again(
    order: Order, engine: AsyncEngine
) -> None:
    body = event_body(
        "accepted", accepted_data(order.technician_id), expected_version=2
    )
    first = created(await technician_posts(order, body))
    after_first = await count_rows(engine)
    again = created(await technician_posts(order, body))
    assert again == first
    # The retry's expected_version is stale by now (its own write moved the order
    # on); a retry is still answered with the stored event.
    assert await count_rows(engine) == after_first
    assert (await order.state())["orderversion"] == 3


async def test_the_same_id_with_other_content_is_a_409_and_stores_nothing(
    order: Order, engine: AsyncEngine
) -> None:
    body = event_body("accepted", accepted_data(order.technician_id))
    created(await technician_posts(order, body))
    before = await count_rows(engine)
    other = {**body, "data": {**body["data"], "eta_minutes": 90}}
    response = await technician_posts(order, other)
    assert_problem(response, 409, "duplicate_event_conflict")
    assert await count_rows(engine) == before


async def test_a_refused_id_sent_again_after_the_order_moved_on_is_refused_again(
    order: Order, engine: AsyncEngine
) -> None:
    arrive = event_body("arrived", arrived_data(order.technician_id))
    assert_problem(await technician_posts(order, arrive), 409, "transition_not_allowed")
    await order.accept()  # now `arrived` would be allowed, but not under that id
    before = await count_rows(engine)
    assert_problem(await technician_posts(order, arrive), 409, "transition_not_allowed")
    assert await count_rows(engine) == before
    assert (await order.state())["status"] == "accepted"
    await order.arrive()  # a new attempt, with a new id


# --- who may post -----------------------------------------------------------------


async def test_another_customer_posting_to_an_order_gets_404_not_403(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await order.services.customer_posts(
        order.order_id, random_ref("cust"), event_body("cancelled", cancelled_data())
    )
    assert_problem(response, 404, "order_not_found")
    assert await count_rows(engine) == before
    assert (await order.state())["status"] == "assigned"


async def test_another_technician_posting_to_an_order_gets_404(
    order: Order, engine: AsyncEngine
) -> None:
    stranger = random_ref("tech")
    await order.services.register_technician(stranger, skills=(MANUAL_ONLY,))
    before = await count_rows(engine)
    response = await order.services.technician_posts(
        order.order_id, stranger, event_body("accepted", accepted_data(stranger))
    )
    assert_problem(response, 404, "order_not_found")
    assert await count_rows(engine) == before


async def test_the_assigned_technician_naming_another_technician_in_data_gets_404(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await technician_posts(
        order, event_body("declined", declined_data(random_ref("tech")))
    )
    assert_problem(response, 404, "order_not_found")
    assert await count_rows(engine) == before


async def test_another_customer_with_a_stale_expected_version_still_gets_404(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await order.services.customer_posts(
        order.order_id,
        random_ref("cust"),
        event_body("cancelled", cancelled_data(), expected_version=0),
    )
    assert_problem(response, 404, "order_not_found")
    assert "current_version" not in response.json()
    assert await count_rows(engine) == before


async def test_a_technician_posting_to_intake_is_forbidden(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await order.services.intake.post(
        f"/v1/orders/{order.order_id}/events",
        headers=order.services.technician(order.technician_id),
        json=event_body("cancelled", cancelled_data()),
    )
    assert_problem(response, 403, "forbidden")
    assert await count_rows(engine) == before


async def test_a_customer_posting_to_dispatch_is_forbidden(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await order.services.dispatch.post(
        f"/v1/orders/{order.order_id}/events",
        headers=order.services.customer(order.customer_id),
        json=event_body("cancelled", cancelled_data()),
    )
    assert_problem(response, 403, "forbidden")
    assert await count_rows(engine) == before


async def test_a_technician_posting_a_customer_event_type_to_dispatch_is_forbidden(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    # `cancelled` is posted to dispatch by dispatchers, never by technicians.
    response = await technician_posts(order, event_body("cancelled", cancelled_data()))
    assert_problem(response, 403, "actor_not_allowed")
    assert await count_rows(engine) == before


# --- bodies that are not valid events -----------------------------------------------


async def test_a_body_over_64_kib_is_a_413_and_stores_nothing(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = event_body("accepted", accepted_data(order.technician_id))
    body["data"]["padding"] = "x" * MAX_BODY
    response = await technician_posts(order, body)
    assert_problem(response, 413, "request_too_large")
    assert await count_rows(engine) == before


async def test_an_unknown_top_level_field_is_a_422_naming_it(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = {**event_body("accepted", accepted_data(order.technician_id)), "prio": 1}
    problem = assert_problem(
        await technician_posts(order, body), 422, "validation_error"
    )
    assert [e["field"] for e in problem["errors"]] == ["prio"]
    assert await count_rows(engine) == before


async def test_an_unknown_field_inside_data_is_a_422_naming_it(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    data = {**accepted_data(order.technician_id), "mood": "happy"}
    problem = assert_problem(
        await technician_posts(order, event_body("accepted", data)),
        422,
        "validation_error",
    )
    assert [e["field"] for e in problem["errors"]] == ["data.mood"]
    assert await count_rows(engine) == before


def _priced_with(**changes: Any) -> Json:
    data = priced_data(20_000)
    data.update(changes)
    return data


def _negative_price() -> Json:
    data = priced_data(20_000)
    data["items"][0]["unit_price"] = -3000
    data["total"] = sum(i["quantity"] * i["unit_price"] for i in data["items"])
    return data


# Each: the event type, its invalid data and the offending field. Priced events go
# to an order that was diagnosed; rated ones to a completed order.
INVALID_TECHNICIAN_DATA: Final = [
    pytest.param(_negative_price(), "data.items.0.unit_price", id="negative-price"),
    pytest.param(
        _priced_with(total=20_001),
        "data",
        id="total-not-sum-of-items",
    ),
    pytest.param(_priced_with(currency="XYZ"), "data.currency", id="unknown-currency"),
    pytest.param(_priced_with(total=-1, items=[]), "data.items", id="no-items"),
]


@pytest.mark.parametrize(("data", "field"), INVALID_TECHNICIAN_DATA)
async def test_an_invalid_priced_event_is_a_422_naming_the_field(
    services: Services, engine: AsyncEngine, data: Json, field: str
) -> None:
    order = await Order.create(services)
    await order.assign()
    await order.accept()
    await order.arrive()
    await order.diagnose()
    before = await count_rows(engine)
    problem = assert_problem(
        await technician_posts(order, event_body("priced", data)),
        422,
        "validation_error",
    )
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await count_rows(engine) == before


INVALID_RATINGS: Final = [
    pytest.param(rated_data(0), "data.score", id="score-0"),
    pytest.param(rated_data(6), "data.score", id="score-6"),
    pytest.param(rated_data(5, nps=-1), "data.nps", id="nps-minus-1"),
    pytest.param(rated_data(5, nps=11), "data.nps", id="nps-11"),
    pytest.param(
        {**rated_data(5), "comment": "好" * 2001}, "data.comment", id="comment-2001"
    ),
]


@pytest.mark.parametrize(("data", "field"), INVALID_RATINGS)
async def test_an_invalid_rating_is_a_422_naming_the_field(
    services: Services, engine: AsyncEngine, data: Json, field: str
) -> None:
    order = await Order.create(services)
    await order.to_approved()
    await order.technician("completed", completed_data())
    before = await count_rows(engine)
    problem = assert_problem(
        await customer_posts(order, event_body("rated", data)), 422, "validation_error"
    )
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await count_rows(engine) == before
    assert (await order.state())["rated"] is False


async def test_a_rating_within_range_is_accepted(services: Services) -> None:
    order = await Order.create(services)
    await order.to_approved()
    await order.technician("completed", completed_data())
    await order.customer("rated", {**rated_data(1, nps=0), "comment": "好" * 2000})
    assert (await order.state())["rated"] is True


async def test_an_over_long_complaint_text_is_a_422(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    data = {**complaint_filed_data(random_ref("cmp")), "text": "慢" * 2001}
    problem = assert_problem(
        await customer_posts(order, event_body("complaint_filed", data)),
        422,
        "validation_error",
    )
    assert [e["field"] for e in problem["errors"]] == ["data.text"]
    assert await count_rows(engine) == before


async def test_an_over_long_diagnosis_summary_is_a_422(
    order: Order, engine: AsyncEngine
) -> None:
    await order.accept()
    before = await count_rows(engine)
    data = {**diagnosed_data(remote=True), "summary": "x" * 2001}
    problem = assert_problem(
        await technician_posts(order, event_body("diagnosed", data)),
        422,
        "validation_error",
    )
    assert [e["field"] for e in problem["errors"]] == ["data.summary"]
    assert await count_rows(engine) == before


async def test_an_unknown_event_type_is_a_422(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    problem = assert_problem(
        await technician_posts(order, event_body("teleported", {})),
        422,
        "unknown_event_type",
    )
    assert [e["field"] for e in problem["errors"]] == ["type"]
    assert await count_rows(engine) == before


async def test_a_technician_event_posted_to_intake_is_an_unsupported_event_type(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await customer_posts(
        order, event_body("accepted", accepted_data(order.technician_id))
    )
    assert_problem(response, 422, "unsupported_event_type")
    assert await count_rows(engine) == before


async def test_a_customer_event_posted_to_dispatch_is_an_unsupported_event_type(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    response = await technician_posts(
        order, event_body("servicetrail.order.rated", rated_data())
    )
    assert_problem(response, 422, "unsupported_event_type")
    assert await count_rows(engine) == before


# --- concurrent writers -------------------------------------------------------------


async def test_twenty_concurrent_conflicting_posts_store_exactly_one(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    bodies = [
        event_body(
            "accepted" if n % 2 else "declined",
            accepted_data(order.technician_id)
            if n % 2
            else declined_data(order.technician_id),
            # All written at the version they saw: a late one must not be judged
            # against the winner's state (a decline would make the rest 404s).
            expected_version=2,
        )
        for n in range(20)
    ]
    responses = await asyncio.gather(*(technician_posts(order, b) for b in bodies))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "version_conflict")
            assert response.json()["current_version"] == 3
    assert await count_rows(engine) == Rows(before.events + 1, before.outbox + 1)
    (winner,) = (r.json() for r in responses if r.status_code == 201)
    state = await order.state()
    assert state["orderversion"] == 3
    expected = "accepted" if winner["event"]["type"].endswith("accepted") else "created"
    assert state["status"] == expected


async def test_ten_concurrent_retries_of_one_post_store_it_once(
    order: Order, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    body = event_body("accepted", accepted_data(order.technician_id))
    responses = await asyncio.gather(
        *(technician_posts(order, body) for _ in range(10))
    )
    answers = [created(response) for response in responses]
    assert all(answer == answers[0] for answer in answers)
    assert await count_rows(engine) == Rows(before.events + 1, before.outbox + 1)


async def test_ten_concurrent_retries_of_one_new_order_create_it_once(
    services: Services, engine: AsyncEngine
) -> None:
    customer = random_ref("cust")
    body = new_order_body()
    responses = await asyncio.gather(
        *(
            services.intake.post(
                "/v1/orders", headers=services.customer(customer), json=body
            )
            for _ in range(10)
        )
    )
    answers = [created(response) for response in responses]
    assert {answer["order_id"] for answer in answers} == {answers[0]["order_id"]}
    assert await count_rows(engine) == Rows(1, 1)
    async with engine.connect() as conn:
        contacts = await conn.scalar(select(func.count()).select_from(contact))
    assert contacts == 1


async def test_a_loser_of_a_race_gets_the_same_409_when_it_retries(
    order: Order, engine: AsyncEngine
) -> None:
    bodies = [
        event_body("accepted", accepted_data(order.technician_id), expected_version=2)
        for _ in range(5)
    ]
    responses = await asyncio.gather(*(technician_posts(order, b) for b in bodies))
    losers = [b for b, r in zip(bodies, responses, strict=True) if r.status_code == 409]
    assert len(losers) == 4
    before = await count_rows(engine)
    retried = await technician_posts(order, losers[0])
    assert_problem(retried, 409, "version_conflict")
    assert await count_rows(engine) == before


async def test_an_admin_may_post_on_behalf_of_a_participant(order: Order) -> None:
    # Admins pass every role check; the lifecycle still applies to what they post.
    response = await order.services.dispatch.post(
        f"/v1/orders/{order.order_id}/events",
        headers=order.services.auth(Role.ADMIN, "admin-1"),
        json=event_body("accepted", accepted_data(order.technician_id)),
    )
    assert created(response)["event"]["actor"] == "admin:admin-1"


async def test_an_event_for_an_order_that_does_not_exist_is_a_404(
    services: Services, engine: AsyncEngine
) -> None:
    technician = random_ref("tech")
    before = await count_rows(engine)
    response = await services.technician_posts(
        str(uuid4()), technician, event_body("accepted", accepted_data(technician))
    )
    assert_problem(response, 404, "order_not_found")
    assert await count_rows(engine) == before


@pytest.mark.parametrize(
    "device_id",
    [
        pytest.param("pixel\x007", id="nul"),
        pytest.param("   ", id="blank"),
        pytest.param("d" * 201, id="over-long"),
    ],
)
async def test_a_device_id_the_event_store_cannot_hold_is_a_422_and_stores_nothing(
    order: Order, engine: AsyncEngine, device_id: str
) -> None:
    before = await count_rows(engine)
    body = event_body("accepted", accepted_data(order.technician_id))
    response = await technician_posts(order, body | {"device_id": device_id})
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["device_id"]
    assert await count_rows(engine) == before
