"""The server bounds every request-side time, and no date input can raise.

`time` on create, on event posts and in the offline batch is at most 5 minutes
ahead of the server's clock and at most MAX_EVENT_AGE (72 h) behind it; the
extremes of RFC 3339 (year 1 at +14:00 or +23:59, 9999-12-31 at -23:59, a leap
second) are 422s, never 500s. The ledger's `as_of` and metrics' `from`/`to`
query bounds answer 4xx or a valid answer for the same extremes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics.app import create_app as create_metrics
from services.metrics.settings import MetricsSettings
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.builders import random_ref
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body
from tests.http_events import (
    MANUAL_ONLY,
    Json,
    Order,
    Services,
    accepted_data,
    assert_problem,
    cancelled_data,
    count_rows,
    event_body,
    started,
)

GRACE: Final = timedelta(hours=72)
# Margins for the time the test itself takes between building and posting.
SLACK: Final = timedelta(minutes=1)

TimeText: TypeAlias = Callable[[datetime], str]


def _at(offset: timedelta) -> TimeText:
    return lambda now: (now + offset).isoformat()


def _fixed(text: str) -> TimeText:
    return lambda _: text


# (id, the `time` as sent, built from the server's clock, the refusal's code)
REFUSED_TIMES: Final[list[tuple[str, TimeText, str]]] = [
    ("y1+14", _fixed("0001-01-01T00:00:00+14:00"), "validation_error"),
    ("y1+2359", _fixed("0001-01-01T00:00:00+23:59"), "validation_error"),
    ("y9999-2359", _fixed("9999-12-31T23:59:59-23:59"), "validation_error"),
    ("leap-second", _fixed("2026-06-30T23:59:60Z"), "validation_error"),
    ("2001", _fixed("2001-01-01T00:00:00Z"), "event_time_too_old"),
    ("y1-utc", _fixed("0001-01-01T00:00:00Z"), "event_time_too_old"),
    ("y9999-utc", _fixed("9999-12-31T23:59:59Z"), "event_time_in_future"),
    ("6-min-ahead", _at(timedelta(minutes=6)), "event_time_in_future"),
    ("grace-plus-1s", _at(-GRACE - timedelta(seconds=1)), "event_time_too_old"),
]
ACCEPTED_TIMES: Final[list[tuple[str, TimeText]]] = [
    ("just-inside-the-skew", _at(timedelta(minutes=5) - SLACK)),
    ("just-inside-the-grace", _at(-GRACE + 2 * SLACK)),
    ("lowercase-t-z", lambda now: (now - SLACK).strftime("%Y-%m-%dt%H:%M:%S.%fz")),
    ("nanoseconds", lambda now: (now - SLACK).strftime("%Y-%m-%dT%H:%M:%S.%f123Z")),
]
TIMES: Final = [
    *(pytest.param(time, code, id=id_) for id_, time, code in REFUSED_TIMES),
    *(pytest.param(time, None, id=id_) for id_, time in ACCEPTED_TIMES),
]


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


async def old_order(services: Services) -> Order:
    """An order created at the very start of the grace, so any later time fits."""
    customer_id = random_ref("cust")
    start = datetime.now(UTC) - GRACE + SLACK
    order_id = await services.create_order(customer_id, time=start.isoformat())
    technician_id = random_ref("tech")
    await services.register_technician(technician_id, skills=(MANUAL_ONLY,))
    return Order(services, order_id, customer_id, technician_id)


def check(response: httpx.Response, refusal: str | None) -> None:
    if refusal is None:
        assert response.status_code == 201, response.text
    else:
        assert_problem(response, 422, refusal)


@pytest.mark.parametrize(("time", "refusal"), TIMES)
async def test_create_bounds_time_by_the_server_clock(
    services: Services, engine: AsyncEngine, time: TimeText, refusal: str | None
) -> None:
    before = await count_rows(engine)
    body = new_order_body(time=time(datetime.now(UTC)))
    response = await services.intake.post(
        "/v1/orders", json=body, headers=services.customer(random_ref("cust"))
    )
    check(response, refusal)
    if refusal is not None:
        assert await count_rows(engine) == before


async def test_a_batch_bounds_each_time_by_the_server_clock(
    services: Services, engine: AsyncEngine
) -> None:
    order = await old_order(services)
    await order.assign()
    now = datetime.now(UTC)
    items: list[Json] = []
    for _, time, _ in REFUSED_TIMES:
        body = event_body("accepted", accepted_data(order.technician_id))
        items.append(body | {"time": time(now), "order_id": order.order_id})
    before = await count_rows(engine)

    response = await services.dispatch.post(
        "/v1/events:batch",
        headers=services.technician(order.technician_id),
        json={"events": items},
    )

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    codes = [r["problem"]["type"].rsplit(":", 1)[1] for r in results]
    assert codes == [code for _, _, code in REFUSED_TIMES]
    assert all(r["problem"]["status"] == 422 for r in results)
    assert await count_rows(engine) == before


TimedPost: TypeAlias = Callable[[Services, Order, object], Awaitable[httpx.Response]]


async def cancel_at(services: Services, order: Order, time: object) -> httpx.Response:
    """The customer's cancellation of `order`, claiming `time`."""
    body = event_body("cancelled", cancelled_data()) | {"time": time}
    return await services.customer_posts(order.order_id, order.customer_id, body)


async def assign_at(services: Services, order: Order, time: object) -> httpx.Response:
    """A dispatcher's assignment of `order` to its technician, claiming `time`."""
    return await services.dispatch.post(
        f"/v1/orders/{order.order_id}/assign",
        headers=services.dispatcher,
        json={"id": str(uuid4()), "technician_id": order.technician_id, "time": time},
    )


@pytest.mark.parametrize(
    "post",
    [
        pytest.param(cancel_at, id="event-post"),
        pytest.param(assign_at, id="manual-assignment"),
    ],
)
@pytest.mark.parametrize(("time", "refusal"), TIMES)
async def test_an_order_write_bounds_time_by_the_server_clock(
    services: Services,
    engine: AsyncEngine,
    post: TimedPost,
    time: TimeText,
    refusal: str | None,
) -> None:
    order = await old_order(services)
    before = await count_rows(engine)
    response = await post(services, order, time(datetime.now(UTC)))
    check(response, refusal)
    if refusal is not None:
        assert await count_rows(engine) == before
        assert (await order.state())["status"] == "created"


@pytest.mark.parametrize(
    "time",
    [
        pytest.param(1767225600, id="a-number"),
        pytest.param("yesterday", id="words"),
        pytest.param("2026-01-01T00:00:00", id="no-offset"),
        pytest.param("", id="empty"),
        pytest.param("2026-01-01T00:00:00Z\u0000", id="nul"),
        pytest.param({"at": "2026-01-01T00:00:00Z"}, id="an-object"),
    ],
)
async def test_a_manual_assignment_time_that_is_not_an_instant_is_a_422(
    services: Services, engine: AsyncEngine, time: object
) -> None:
    order = await old_order(services)
    before = await count_rows(engine)
    response = await assign_at(services, order, time)
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["time"], problem
    assert await count_rows(engine) == before


async def test_a_backdated_assignment_keeps_its_time_and_its_id_answers_once(
    services: Services, engine: AsyncEngine
) -> None:
    order = await old_order(services)
    when = (datetime.now(UTC) - GRACE + 2 * SLACK).isoformat()
    body = {"id": str(uuid4()), "technician_id": order.technician_id, "time": when}
    url = f"/v1/orders/{order.order_id}/assign"

    first = await services.dispatch.post(url, headers=services.dispatcher, json=body)
    again = await services.dispatch.post(url, headers=services.dispatcher, json=body)
    moved = await services.dispatch.post(
        url,
        headers=services.dispatcher,
        json=body | {"time": (datetime.now(UTC) - SLACK).isoformat()},
    )

    assert first.status_code == 201, first.text
    assert datetime.fromisoformat(first.json()["event"]["time"]) == (
        datetime.fromisoformat(when)
    )
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert_problem(moved, 409, "duplicate_event_conflict")
    assert (await order.state())["status"] == "assigned"


async def test_a_manual_assignment_before_the_orders_previous_event_is_a_422(
    services: Services, engine: AsyncEngine
) -> None:
    order = await old_order(services)  # created at the start of the grace
    before = await count_rows(engine)
    response = await assign_at(
        services, order, (datetime.now(UTC) - GRACE + SLACK / 2).isoformat()
    )
    assert_problem(response, 422, "event_time_before_previous")
    assert await count_rows(engine) == before


# --- query bounds on the read side --------------------------------------------------

QUERY_BOUNDS: Final = [
    pytest.param("0001-01-01T00:00:00+14:00", {422}, id="y1+14"),
    pytest.param("0001-01-01T00:00:00+23:59", {422}, id="y1+2359"),
    pytest.param("9999-12-31T23:59:59-23:59", {422}, id="y9999-2359"),
    pytest.param("2026-06-30T23:59:60Z", {422}, id="leap-second"),
    pytest.param("0001-01-01T00:00:00Z", {200}, id="y1-utc"),
    pytest.param("9999-12-31T23:59:59.999999Z", {200}, id="y9999-utc"),
    pytest.param("2026-03-02t09:00:00.123456789z", {200}, id="lowercase-nanos"),
]


@pytest_asyncio.fixture(loop_scope="session")
async def ledger(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_ledger(service_settings(settings, LedgerSettings, run_consumer=False))
    async with running(app) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def metrics(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_metrics(
        service_settings(
            settings,
            MetricsSettings,
            run_consumer=False,
            alert_interval_seconds=3600.0,
        )
    )
    async with running(app) as client:
        yield client


def expect(response: httpx.Response, statuses: set[int]) -> None:
    assert response.status_code in statuses, response.text
    if response.status_code == 422:
        assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize(("as_of", "statuses"), QUERY_BOUNDS)
async def test_ledger_as_of_is_total(
    ledger: httpx.AsyncClient,
    settings: CommonSettings,
    as_of: str,
    statuses: set[int],
) -> None:
    auditor = bearer(settings)(Role.AUDITOR, "audit-1")
    response = await ledger.get(
        "/v1/orders/00000000-0000-4000-8000-000000000001/state",
        params={"as_of": as_of},
        headers=auditor,
    )
    # No such order: a parsed bound reaches the query and gets the ledger's 404.
    expect(response, {404} if statuses == {200} else statuses)


@pytest.mark.parametrize(("bound", "statuses"), QUERY_BOUNDS)
@pytest.mark.parametrize("path", ["/v1/indicators", "/v1/indicators/timeseries"])
async def test_metrics_from_and_to_are_total(
    metrics: httpx.AsyncClient,
    settings: CommonSettings,
    path: str,
    bound: str,
    statuses: set[int],
) -> None:
    manager = bearer(settings)(Role.DISPATCHER, "ops-1")
    params = {"indicator": "response_time_s"} if path.endswith("timeseries") else {}
    for query in ({"from": bound}, {"to": bound}):
        response = await metrics.get(path, params=params | query, headers=manager)
        expect(response, statuses)


async def test_metrics_refuse_what_utc_cannot_hold_and_take_the_widest_utc_range(
    metrics: httpx.AsyncClient, settings: CommonSettings
) -> None:
    manager = bearer(settings)(Role.DISPATCHER, "ops-1")
    response = await metrics.get(
        "/v1/indicators",
        params={"from": "0001-01-01T00:00:00+14:00", "to": "9999-12-31T23:59:59-23:59"},
        headers=manager,
    )
    assert_problem(response, 422, "validation_error")
    response = await metrics.get(
        "/v1/indicators",
        params={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
        headers=manager,
    )
    assert response.status_code == 200, response.text
