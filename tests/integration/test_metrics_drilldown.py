"""GET /v1/indicators/orders: the rows behind a number agree with the number.

On random valid histories (`metrics_io.random_histories`) and the slices the
reference test uses, every indicator's rows are listed page by page and compared with
`/v1/indicators` for the same query: a rate's rows are its denominator, those flagged
`in_numerator` its numerator; a distribution's rows are its count and their values
give its nearest-rank percentiles and max; a mean's values its mean; a count's rows
its value. Hostile inputs are 4xx problems; roles as `/v1/indicators`.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import pytest

from services.metrics.catalog import CATALOG_DEFAULT
from services.metrics.drilldown import MAX_LIMIT, drillable
from shared.domain.actors import Role
from shared.domain.events import Outcome
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.fixtures.postgres import DatabaseFactory
from tests.integration.metrics_io import (
    JsonDict,
    Where,
    all_events,
    dispatcher,
    get_indicators,
    metrics_client,
    publish_and_catch_up,
)
from tests.integration.test_metrics_indicators import scored_order
from tests.integration.test_metrics_properties import (
    own_settings,
    publish_and_wait,
    random_events,
    slices_for,
)

pytestmark = pytest.mark.integration

# Indicators of the alert cases are not order rows: not listed.
NOT_LISTED: Final = ("alert_ack_time_s", "alert_close_time_s")


async def all_rows(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    indicator: str,
    params: dict[str, str],
    *,
    limit: int = MAX_LIMIT,
) -> list[JsonDict]:
    """Every row behind `indicator`, following the cursor."""
    rows: list[JsonDict] = []
    cursor: str | None = None
    while True:
        query = {**params, "indicator": indicator, "limit": str(limit)}
        if cursor is not None:
            query["cursor"] = cursor
        response = await client.get(
            "/v1/indicators/orders", params=query, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def nearest_rank(values: list[float], share: float) -> float:
    """indicators.md's percentile: the value at rank ceil(p x n)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def assert_rows_agree(name: str, number: JsonDict, rows: list[JsonDict]) -> None:
    """The rows give back the number they are behind."""
    values = [row["value"] for row in rows]
    if "denominator" in number:  # a rate
        assert len(rows) == number["denominator"], name
        assert sum(row["in_numerator"] for row in rows) == number["numerator"], name
        assert all(row["in_denominator"] for row in rows), name
    elif "p50" in number:  # a distribution
        assert len(rows) == number["count"], name
        if rows:
            assert number["p50"] == pytest.approx(nearest_rank(values, 0.5)), name
            assert number["p90"] == pytest.approx(nearest_rank(values, 0.9)), name
            assert number["max"] == pytest.approx(max(values)), name
    elif "count" in number:  # a mean or NPS
        assert len(rows) == number["count"], name
        if rows and name.startswith("nps "):
            net = sum(v >= 9 for v in values) - sum(v <= 6 for v in values)
            assert number["value"] == pytest.approx(100 * net / len(values)), name
        elif rows:
            assert number["value"] == pytest.approx(sum(values) / len(values)), name
    else:  # a count
        assert len(rows) == number["value"], name


async def assert_every_indicator_agrees(
    client: httpx.AsyncClient, headers: dict[str, str], where: Where
) -> None:
    params = where.params()
    numbers = (await get_indicators(client, headers, **params))["indicators"]
    for name in drillable(CATALOG_DEFAULT):
        rows = await all_rows(client, headers, name, params)
        assert_rows_agree(f"{name} in {where}", numbers[name], rows)
        keys = [(row["at"], row["order_id"]) for row in rows]
        assert keys == sorted(keys, reverse=True), f"{name}: newest first"


# Seeds, not hypothesis: a failing example of ~200 requests is too slow to shrink;
# each seed is a different random history and set of slices.
@pytest.mark.parametrize("seed", [20261204, 7, 4242])
async def test_the_rows_behind_every_indicator_give_back_its_number(
    fresh_database: DatabaseFactory,
    migrated_template: str,
    kafka_bootstrap: str,
    seed: int,
) -> None:
    rng = random.Random(seed)
    order_events = random_events(rng, rng.randint(10, 25))
    settings_ = await own_settings(
        fresh_database("metrics_drill", template=migrated_template), kafka_bootstrap
    )
    headers = dispatcher(settings_)
    async with metrics_client(settings_) as client:
        await publish_and_wait(client, settings_, order_events)
        slices = [
            *slices_for(rng, order_events),
            Where(period=rng.choice(("peak", "offpeak"))),
        ]
        for where in slices:
            await assert_every_indicator_agrees(client, headers, where)


# --- paging, rows and roles on fixed orders -------------------------------------------

TECH: Final = "tech-drill"


def fixed_orders(now: datetime) -> list[Any]:
    """Five orders of the last days; the third not fixed."""
    return [
        scored_order(
            TECH,
            now - timedelta(days=n + 1),
            accept_after=10 + n,
            outcome=Outcome.NOT_FIXED if n == 2 else Outcome.FIXED,
            rating=(5 - n % 3, {"attitude": 4}),
        )
        for n in range(5)
    ]


async def test_pages_walk_every_row_once_newest_first(
    settings: CommonSettings,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    orders = fixed_orders(now)
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        await publish_and_catch_up(client, settings, all_events(orders))
        paged = await all_rows(
            client, headers, "first_time_fix_rate", {"window": "30d"}, limit=2
        )
        whole = await all_rows(
            client, headers, "first_time_fix_rate", {"window": "30d"}
        )
        responses = await all_rows(
            client, headers, "response_time_s", {"technician_id": TECH}
        )
    assert paged == whole
    assert [row["order_id"] for row in whole] == [str(o.order_id) for o in orders]
    assert [row["in_numerator"] for row in whole] == [True, True, False, True, True]
    first = whole[0]
    assert first["region"] == "shanghai-pudong"
    assert (first["status"], first["technician_id"]) == ("completed", TECH)
    assert first["category"] == "washing_machine"
    assert first["urgency"] == "normal"
    # Accepted 10 + n minutes after creation: the row's own duration in seconds.
    assert [row["value"] for row in responses] == [600.0 + 60 * n for n in range(5)]


async def test_orders_open_lists_the_open_orders(settings: CommonSettings) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    orders = fixed_orders(now)
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        await publish_and_catch_up(client, settings, all_events(orders))
        numbers = await get_indicators(client, headers, region="shanghai-pudong")
        rows = await all_rows(
            client, headers, "orders_open", {"region": "shanghai-pudong"}
        )
    # Each fixed order was completed: open is none of them.
    assert len(rows) == numbers["indicators"]["orders_open"]["value"] == 0


HOSTILE: Final[list[tuple[dict[str, str], str]]] = [
    ({"indicator": "no_such_indicator"}, "unknown_indicator"),
    ({"indicator": "alert_ack_time_s"}, "unknown_indicator"),
    ({"indicator": "csat\x00"}, "validation_error"),
    ({"indicator": "x" * 101}, "validation_error"),
    ({"indicator": "csat", "cursor": "not-a-cursor"}, "invalid_cursor"),
    ({"indicator": "csat", "cursor": "W10="}, "invalid_cursor"),  # base64 of []
    ({"indicator": "csat", "cursor": "x" * 1001}, "validation_error"),
    ({"indicator": "csat", "limit": "0"}, "validation_error"),
    ({"indicator": "csat", "limit": str(MAX_LIMIT + 1)}, "validation_error"),
    ({"indicator": "csat", "limit": "10" * 30}, "validation_error"),
    ({"indicator": "csat", "window": "5y"}, "validation_error"),
    ({"indicator": "csat", "from": "yesterday"}, "validation_error"),
    ({"indicator": "csat", "from": "9999-12-31T23:59:59"}, "validation_error"),
    ({"indicator": "csat", "period": "lunch"}, "validation_error"),
    ({"indicator": "csat", "region": ""}, "validation_error"),
    ({}, "validation_error"),
]


async def test_hostile_queries_are_problems(settings: CommonSettings) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        await publish_and_catch_up(client, settings, all_events(fixed_orders(now)))
        first = await client.get(
            "/v1/indicators/orders",
            params={"indicator": "csat", "limit": "1"},
            headers=headers,
        )
        # A cursor of one indicator names no row of another.
        other = await client.get(
            "/v1/indicators/orders",
            params={"indicator": "rating_mean", "cursor": first.json()["next_cursor"]},
            headers=headers,
        )
        answers = [
            (
                query,
                code,
                await client.get(
                    "/v1/indicators/orders", params=query, headers=headers
                ),
            )
            for query, code in HOSTILE
        ]
    assert first.status_code == 200, first.text
    assert first.json()["next_cursor"] is not None
    answers.append(({"cursor": "of csat"}, "invalid_cursor", other))
    for query, code, response in answers:
        assert response.status_code == 422, (query, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == f"urn:servicetrail:problem:{code}", query


async def test_roles_are_those_of_the_indicators(settings: CommonSettings) -> None:
    as_role = bearer(settings)
    params = {"indicator": "csat"}
    async with metrics_client(settings) as client:
        answers = {
            role: (
                await client.get(
                    "/v1/indicators/orders",
                    params=params,
                    headers=as_role(role, f"{role.value}-drill"),
                )
            ).status_code
            for role in (
                Role.DISPATCHER,
                Role.AUDITOR,
                Role.ADMIN,
                Role.TECHNICIAN,
                Role.CUSTOMER,
            )
        }
        anonymous = await client.get("/v1/indicators/orders", params=params)
    assert answers == {
        Role.DISPATCHER: 200,
        Role.AUDITOR: 200,
        Role.ADMIN: 200,
        Role.TECHNICIAN: 403,
        Role.CUSTOMER: 403,
    }
    assert anonymous.status_code == 401
