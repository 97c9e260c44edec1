"""Quality-aware dispatch: scores read from the quality topic (hostile records
refused), metrics' score feed, and the unassignable alert raised and cleared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import uuid4

import orjson
import pytest
import pytest_asyncio
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.store import technician_quality
from services.metrics.policy import IndicatorPolicy
from services.metrics.score_feed import (
    publish_changed_scores,
    technician_score_published,
)
from services.metrics.store import metrics_outbox
from shared.domain.actors import Role
from shared.events.envelope import encode, quality_alert_cloudevent
from shared.events.quality import (
    TechnicianScored,
    parse_technician_scored,
    technician_scored_cloudevent,
)
from shared.events.topics import (
    DEAD_LETTER,
    DISPATCH_QUALITY_GROUP,
    QUALITY_ALERTS,
    SOURCE_DISPATCH,
)
from shared.settings import CommonSettings
from tests.builders import random_ref
from tests.http_events import (
    Services,
    cancelled_data,
    event_body,
    started,
)
from tests.integration.kafka_io import publish, read_topic
from tests.integration.metrics_io import all_events, metrics_client, publish_events
from tests.integration.test_auto_assignment import (
    NOBODYS_TRADE,
    open_orders_for,
    wait_for_technician,
)
from tests.integration.test_metrics_indicators import scored_order

pytestmark = pytest.mark.integration

WAIT_SECONDS: Final = 30.0
Json = dict[str, Any]


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(
        settings, kafka=True, assignment_sweep_interval_seconds=0.2
    ) as both:
        yield both


def scored(
    technician_id: str,
    composite: float | None,
    samples: int,
    *,
    as_of: datetime | None = None,
) -> bytes:
    score = TechnicianScored(
        technician_id=technician_id,
        composite=composite,
        samples=samples,
        window="30d",
        policy_version="test",
        as_of=as_of or datetime.now(UTC),
    )
    return encode(
        technician_scored_cloudevent(score, event_id=uuid4(), time=datetime.now(UTC))
    )


def tampered(**changes: Any) -> bytes:
    """A score record with fields of its envelope or data replaced."""
    event = orjson.loads(scored(random_ref("tech"), 80.0, 10))
    data = changes.pop("data", {})
    return orjson.dumps({**event, **changes, "data": {**event["data"], **data}})


async def send(settings: CommonSettings, *values: bytes) -> None:
    await publish(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix + QUALITY_ALERTS,
        [("technician", value) for value in values],
    )


async def quality_rows(engine: AsyncEngine) -> dict[str, tuple[float | None, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(technician_quality))
        return {r.technician_id: (r.composite, r.samples) for r in rows}


async def wait_for_score(engine: AsyncEngine, technician_id: str) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while technician_id not in await quality_rows(engine):
            await asyncio.sleep(0.05)


async def test_published_scores_rank_the_technicians(
    services: Services, settings: CommonSettings, engine: AsyncEngine
) -> None:
    good, plain, weak = random_ref("good"), random_ref("plain"), random_ref("weak")
    for technician_id in (good, plain, weak):
        await services.register_technician(technician_id)
    await open_orders_for(services, good, 2)
    # Metrics' own alerts share the topic: dispatch skips them.
    alert = quality_alert_cloudevent(
        "alert_raised",
        subject="region:shanghai-pudong",
        time=datetime.now(UTC),
        data={"alert_id": str(uuid4()), "rule": "slow_response"},
    )
    await send(
        settings,
        encode(alert),
        scored(good, 91.5, 20),
        scored(weak, 20.0, 20),
        scored(plain, None, 0),
    )
    await wait_for_score(engine, plain)
    assert await quality_rows(engine) == {
        good: (91.5, 20),
        weak: (20.0, 20),
        plain: (None, 0),
    }

    order_id = await services.create_order(random_ref("cust"))
    # The best score wins over fewer open orders.
    assert (await wait_for_technician(services, order_id))["technician_id"] == good


async def test_hostile_score_records_are_refused_and_change_nothing(
    services: Services, settings: CommonSettings, engine: AsyncEngine
) -> None:
    hostile = [
        tampered(data={"composite": 100.5}),
        tampered(data={"composite": -1}),
        tampered(data={"composite": "80"}),
        tampered(data={"technician_id": "x" * 300}),
        tampered(data={"technician_id": "two words"}),
        tampered(data={"samples": "5"}),
        tampered(data={"samples": -1}),
        tampered(data={"samples": 1.5}),
        tampered(data={"samples": True}),
        tampered(data={"as_of": "2026-12-04T08:00:00"}),
        tampered(data={"window": "7d"}),
        tampered(data={"extra": 1}),
        tampered(source="/servicetrail/anyone"),
        b'{"not": "an event"}',
        b"\xff not json",
    ]
    sentinel = random_ref("sentinel")
    now = datetime.now(UTC)
    await send(settings, *hostile, scored(sentinel, 75.0, 8, as_of=now))
    await wait_for_score(engine, sentinel)

    assert await quality_rows(engine) == {sentinel: (75.0, 8)}
    dead = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix + DEAD_LETTER,
        expected=len(hostile),
    )
    groups = [dict(r.headers)["consumer.group"] for r in dead]
    assert groups == [DISPATCH_QUALITY_GROUP.encode()] * len(hostile)

    # An older score arriving late does not replace a newer one.
    marker = random_ref("marker")
    await send(
        settings,
        scored(sentinel, 10.0, 99, as_of=now - timedelta(hours=1)),
        scored(marker, 50.0, 1),
    )
    await wait_for_score(engine, marker)
    assert (await quality_rows(engine))[sentinel] == (75.0, 8)


async def unassignable(services: Services) -> list[Json]:
    response = await services.dispatch.get(
        "/v1/dispatch/unassignable", headers=services.dispatcher
    )
    assert response.status_code == 200, response.text
    items: list[Json] = response.json()["items"]
    return items


async def wait_listed(services: Services, order_id: str, *, listed: bool) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while (order_id in {i["order_id"] for i in await unassignable(services)}) != (
            listed
        ):
            await asyncio.sleep(0.05)


async def alerts_of(
    settings: CommonSettings, order_id: str, expected: int
) -> list[Json]:
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix + QUALITY_ALERTS,
        expected=expected,
    )
    events = [orjson.loads(r.value or b"{}") for r in records]
    return [e for e in events if e["subject"] == f"order:{order_id}"]


async def test_an_order_nobody_can_take_raises_one_alert_cleared_on_assignment(
    services: Services, settings: CommonSettings
) -> None:
    order_id = await services.create_order(random_ref("cust"), category=NOBODYS_TRADE)
    await wait_listed(services, order_id, listed=True)
    (item,) = [i for i in await unassignable(services) if i["order_id"] == order_id]
    assert item["category"] == NOBODYS_TRADE
    assert datetime.fromisoformat(item["waiting_since"]) <= datetime.now(UTC)
    await asyncio.sleep(1.0)  # several sweeps find nobody again: still one alert

    boiler_fitter = random_ref("boiler")
    await services.register_technician(boiler_fitter, skills=(NOBODYS_TRADE,))
    order = await services.order(order_id)
    assert (order["status"], order["technician_id"]) == ("assigned", boiler_fitter)
    await wait_listed(services, order_id, listed=False)

    raised, cleared = await alerts_of(settings, order_id, expected=2)
    assert (raised["type"], cleared["type"]) == (
        "servicetrail.quality.alert_raised",
        "servicetrail.quality.alert_cleared",
    )
    assert raised["source"] == cleared["source"] == SOURCE_DISPATCH
    assert raised["data"]["rule"] == "unassignable"
    assert raised["data"]["alert_id"] == cleared["data"]["alert_id"] == item["alert_id"]
    assert raised["data"]["scope"] == f"order:{order_id}"


async def test_a_cancelled_unassignable_order_clears_its_alert(
    services: Services, settings: CommonSettings
) -> None:
    customer_id = random_ref("cust")
    order_id = await services.create_order(customer_id, category=NOBODYS_TRADE)
    await wait_listed(services, order_id, listed=True)

    response = await services.customer_posts(
        order_id, customer_id, event_body("cancelled", cancelled_data())
    )
    assert response.status_code == 201, response.text

    await wait_listed(services, order_id, listed=False)
    types = [e["type"] for e in await alerts_of(settings, order_id, expected=2)]
    assert types == [
        "servicetrail.quality.alert_raised",
        "servicetrail.quality.alert_cleared",
    ]


@pytest.mark.parametrize(
    ("query", "role", "status"),
    [
        ("", Role.TECHNICIAN, 403),
        ("", Role.CUSTOMER, 403),
        ("?limit=0", Role.DISPATCHER, 422),
        ("?limit=1001", Role.DISPATCHER, 422),
        ("?limit=ten", Role.DISPATCHER, 422),
        ("", Role.ADMIN, 200),
    ],
)
async def test_only_dispatchers_list_unassignable_orders_within_bounds(
    settings: CommonSettings, query: str, role: Role, status: int
) -> None:
    async with started(settings) as services:
        response = await services.dispatch.get(
            f"/v1/dispatch/unassignable{query}",
            headers=services.auth(role, random_ref("caller")),
        )
    assert response.status_code == status, response.text
    if status != 200:
        assert response.headers["content-type"].startswith("application/problem+json")


async def published_scores(engine: AsyncEngine) -> list[Json]:
    async with engine.connect() as conn:
        values = (
            await conn.execute(
                select(metrics_outbox.c.value).order_by(metrics_outbox.c.id)
            )
        ).scalars()
        return [orjson.loads(v) for v in values]


async def test_metrics_publishes_a_score_only_when_it_changed(
    engine: AsyncEngine,
) -> None:
    policy = IndicatorPolicy()
    now = datetime.now(UTC)
    assert await publish_changed_scores(engine, policy, now) == 0
    # A technician published before, with no data in the window any more.
    async with engine.begin() as conn:
        await conn.execute(
            insert(technician_score_published).values(
                technician_id="gone", composite=80.0, samples=9, published_at=now
            )
        )

    assert await publish_changed_scores(engine, policy, now) == 1
    assert await publish_changed_scores(engine, policy, now) == 0

    (event,) = await published_scores(engine)
    validated = parse_technician_scored(orjson.dumps(event))
    assert validated.data.model_dump() == {
        "technician_id": "gone",
        "composite": None,
        "samples": 0,
        "window": "30d",
        "policy_version": policy.version,
        "as_of": now,
    }


async def test_metrics_scores_reach_dispatch_through_the_quality_topic(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    """Metrics' evaluation loop publishes, its relay sends, dispatch keeps the score."""
    start = datetime.now(UTC) - timedelta(days=2)
    good, few = random_ref("good"), random_ref("few")
    orders = [
        *(scored_order(good, start + timedelta(hours=n)) for n in range(5)),
        scored_order(few, start + timedelta(hours=6)),
    ]
    async with (
        metrics_client(settings, alert_interval_seconds=0.2),
        started(settings, kafka=True),
    ):
        await publish_events(settings, all_events(orders))
        # Metrics may evaluate while only some events are applied: it publishes
        # again on each change, so wait for the counts of all of them.
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                scores = await quality_rows(engine)
                counted = {who: row[1] for who, row in scores.items()}
                if counted.get(good) == 5 and counted.get(few) == 1:
                    break
                await asyncio.sleep(0.1)
    composite, samples = scores[good]
    assert samples == 5
    assert composite is not None
    assert 0 <= composite <= 100
    assert scores[few][1] == 1
