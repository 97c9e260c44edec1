"""Posting events in a named schema version: `rated` 1 and 2 side by side.

A body without `dataschema` is version 1 (what every app written before versions
could be named sends); `urn:servicetrail:order.rated:2` takes the version-2 comment
`{text, language}`. Each is stored as written, with its own `dataschema`; a version
never published is a 422 `unknown_schema` and stores nothing. The last test runs the
relay and the ledger: the ledger keeps each event's exact stored bytes, old version
included.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.http_events import (
    Json,
    Order,
    Services,
    accepted_data,
    assert_problem,
    completed_data,
    count_rows,
    created,
    event_body,
    started,
)
from tests.integration.ledger_io import auditor_headers, ledger_app, wait_for_size

V1: Final = "urn:servicetrail:order.rated:1"
V2: Final = "urn:servicetrail:order.rated:2"


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


async def completed_order(services: Services) -> Order:
    order = await Order.create(services)
    await order.to_approved()
    await order.technician("completed", completed_data())
    return order


def rated_body(data: Json, dataschema: Any = None, **kwargs: Any) -> Json:
    body = event_body("rated", data, **kwargs)
    if dataschema is not None:
        body["dataschema"] = dataschema
    return body


async def rate(order: Order, body: Json) -> Json:
    return created(
        await order.services.customer_posts(order.order_id, order.customer_id, body)
    )


async def rating_in_timeline(order: Order) -> Json:
    response = await order.services.intake.get(
        f"/v1/orders/{order.order_id}/timeline",
        headers=order.services.customer(order.customer_id),
    )
    assert response.status_code == 200, response.text
    entries = [e for e in response.json()["entries"] if e["type"] == "rated"]
    assert len(entries) == 1
    rating: Json = entries[0]["rating"]
    return rating


async def test_a_rating_without_dataschema_is_version_1_and_kept_as_written(
    services: Services,
) -> None:
    order = await completed_order(services)
    event = (await rate(order, rated_body({"score": 4, "comment": "还行"})))["event"]
    assert event["dataschema"] == V1
    assert event["data"]["comment"] == "还行"
    assert await rating_in_timeline(order) == {
        "score": 4,
        "nps": None,
        "dimensions": {},
        "comment": "还行",
        "comment_language": "und",
    }
    assert (await order.state())["rated"] is True


async def test_a_rating_naming_version_1_is_stored_as_version_1(
    services: Services,
) -> None:
    order = await completed_order(services)
    body = rated_body({"score": 2, "nps": 3, "comment": "late"}, V1)
    event = (await rate(order, body))["event"]
    assert event["dataschema"] == V1
    assert event["data"] == {
        "score": 2,
        "nps": 3,
        "dimensions": None,
        "comment": "late",
    }


async def test_a_rating_naming_version_2_is_stored_as_version_2(
    services: Services,
) -> None:
    order = await completed_order(services)
    comment = {"text": "师傅很专业", "language": "zh-Hans-CN"}
    body = rated_body(
        {"score": 5, "dimensions": {"attitude": 5}, "comment": comment}, V2
    )
    event = (await rate(order, body))["event"]
    assert event["dataschema"] == V2
    assert event["data"]["comment"] == comment
    rating = await rating_in_timeline(order)
    assert rating["comment"] == "师傅很专业"
    assert rating["comment_language"] == "zh-Hans-CN"
    assert rating["dimensions"] == {"attitude": 5}


async def test_a_retry_of_a_version_2_rating_returns_the_stored_event(
    services: Services,
) -> None:
    order = await completed_order(services)
    body = rated_body({"score": 5, "comment": {"text": "ok", "language": "en"}}, V2)
    first = await rate(order, body)
    again = await services.customer_posts(order.order_id, order.customer_id, body)
    assert again.status_code in (200, 201), again.text
    assert again.json()["event"] == first["event"]
    # The same id in version 1, even meaning the same: another request.
    conflict = await services.customer_posts(
        order.order_id,
        order.customer_id,
        {**body, "dataschema": V1, "data": {"score": 5}},
    )
    assert_problem(conflict, 409, "duplicate_event_conflict")


async def test_a_version_2_comment_without_dataschema_is_a_422_and_stores_nothing(
    services: Services, engine: AsyncEngine
) -> None:
    order = await completed_order(services)
    before = await count_rows(engine)
    body = rated_body({"score": 5, "comment": {"text": "ok", "language": "en"}})
    problem = assert_problem(
        await services.customer_posts(order.order_id, order.customer_id, body),
        422,
        "validation_error",
    )
    assert "data.comment" in [e["field"] for e in problem["errors"]]
    assert await count_rows(engine) == before


async def refused_rating(
    services: Services, engine: AsyncEngine, dataschema: Any, code: str
) -> Json:
    """A rating naming `dataschema` is a 422 `code` about it, and nothing is stored."""
    order = await completed_order(services)
    before = await count_rows(engine)
    problem = assert_problem(
        await services.customer_posts(
            order.order_id, order.customer_id, rated_body({"score": 5}, dataschema)
        ),
        422,
        code,
    )
    assert [e["field"] for e in problem["errors"]] == ["dataschema"]
    assert await count_rows(engine) == before
    assert (await order.state())["rated"] is False
    return problem


@pytest.mark.parametrize(
    "dataschema",
    [
        pytest.param("urn:servicetrail:order.rated:3", id="newer-release"),
        pytest.param("urn:servicetrail:order.rated:0", id="zero"),
        pytest.param("urn:servicetrail:order.accepted:1", id="another-type"),
        pytest.param("urn:servicetrail:order.rated:1\u0000", id="nul"),
        pytest.param("urn:servicetrail:order.rated:2 ", id="trailing-space"),
        pytest.param("rated:2", id="not-a-urn"),
        pytest.param("", id="empty"),
        pytest.param("urn:servicetrail:order.rated:" + "9" * 5000, id="huge"),
        pytest.param("<script>alert(1)</script>", id="markup"),
    ],
)
async def test_an_unknown_dataschema_is_a_422_unknown_schema_and_stores_nothing(
    services: Services, engine: AsyncEngine, dataschema: str
) -> None:
    problem = await refused_rating(services, engine, dataschema, "unknown_schema")
    assert len(problem["detail"]) < 1000


@pytest.mark.parametrize("dataschema", [2, True, ["urn:servicetrail:order.rated:2"]])
async def test_a_dataschema_that_is_not_a_string_is_a_422_naming_it(
    services: Services, engine: AsyncEngine, dataschema: Any
) -> None:
    await refused_rating(services, engine, dataschema, "validation_error")


async def test_dispatch_takes_a_named_version_of_its_types_too(
    services: Services, engine: AsyncEngine
) -> None:
    order = await Order.create(services)
    await order.assign()
    body = event_body("accepted", accepted_data(order.technician_id))
    before = await count_rows(engine)
    refused = await services.technician_posts(
        order.order_id,
        order.technician_id,
        {**body, "dataschema": "urn:servicetrail:order.accepted:2"},
    )
    assert_problem(refused, 422, "unknown_schema")
    assert await count_rows(engine) == before
    accepted = created(
        await services.technician_posts(
            order.order_id,
            order.technician_id,
            {**body, "dataschema": "urn:servicetrail:order.accepted:1"},
        )
    )
    assert accepted["event"]["dataschema"] == "urn:servicetrail:order.accepted:1"


@pytest.mark.integration
async def test_the_ledger_keeps_the_exact_bytes_of_both_versions(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with (
        started(settings, kafka=True) as services,
        running(ledger_app(settings)) as ledger,
    ):
        old, new = await completed_order(services), await completed_order(services)
        v1 = (await rate(old, rated_body({"score": 3, "comment": "一般"})))["event"]
        comment = {"text": "很好", "language": "zh"}
        v2 = (await rate(new, rated_body({"score": 5, "comment": comment}, V2)))[
            "event"
        ]
        async with engine.connect() as conn:
            stored = await conn.scalar(
                text("SELECT count(*) FROM event_store.order_event")
            )
        await wait_for_size(ledger, auditor_headers(settings), int(stored or 0))
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT l.event_id, l.canonical, e.canonical_digest "
                        "FROM ledger.ledger_entry l JOIN event_store.order_event e "
                        "USING (event_id) WHERE l.event_id = ANY(:ids)"
                    ),
                    {"ids": [v1["id"], v2["id"]]},
                )
            ).all()
    # The two orders may sit on different partitions: the ledger's order of them is
    # not the posts' order.
    by_id = {str(row.event_id): (row.canonical, row.canonical_digest) for row in rows}
    assert set(by_id) == {v1["id"], v2["id"]}
    for event in (v1, v2):
        canonical, digest = by_id[event["id"]]
        # The ledger's bytes are the event store's: the digest the writer stored.
        assert hashlib.sha256(bytes(canonical)).digest() == bytes(digest)
        assert f'"dataschema":"{event["dataschema"]}"'.encode() in bytes(canonical)
    assert b'"comment":"\xe4\xb8\x80\xe8\x88\xac"' in bytes(by_id[v1["id"]][0])
    assert b'"language":"zh"' in bytes(by_id[v2["id"]][0])
