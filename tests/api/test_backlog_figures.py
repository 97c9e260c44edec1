"""Outbox backlog and consumer lag in `/metrics` (gauges) and `/readyz` (figures)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.ledger.store import tracking as ledger_tracking
from shared.domain.actors import Role
from shared.events.topics import DEFAULT_PARTITIONS, LEDGER_GROUP, ORDER_EVENTS
from shared.kafka.producer import create_offset_reader
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body

UNPUBLISHED: Final = "servicetrail_outbox_unpublished_messages"
OLDEST_AGE: Final = "servicetrail_outbox_oldest_unpublished_age_seconds"
LAG: Final = "servicetrail_consumer_lag_records"
LAST_APPLIED: Final = "servicetrail_consumer_last_applied_record_timestamp_seconds"
# Generous: a consumer group's first join on the broker alone takes seconds.
SETTLE_SECONDS: Final = 60.0

T = TypeVar("T")
Gauges = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def gauges(client: httpx.AsyncClient) -> Gauges:
    """Every sample of `/metrics`, by name and labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def samples(all_gauges: Gauges, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in all_gauges.items() if n == name}


def event_store_gauge(all_gauges: Gauges, name: str) -> float | None:
    return all_gauges.get((name, frozenset({("outbox", "event_store")})))


async def readiness(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/readyz")).json()
    return body


async def eventually(
    measure: Callable[[], Awaitable[T]], accept: Callable[[T], bool]
) -> T:
    """Poll `measure` until `accept` holds; fail with the last value after a while."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        value = await measure()
        if accept(value):
            return value
        assert time.monotonic() < deadline, f"never settled: {value}"
        await asyncio.sleep(0.2)


async def post_orders(
    intake: httpx.AsyncClient, settings: CommonSettings, count: int
) -> None:
    customer = bearer(settings)(Role.CUSTOMER, "backlogged")
    for _ in range(count):
        response = await intake.post(
            "/v1/orders", json=new_order_body(), headers=customer
        )
        assert response.status_code == 201, response.text


def intake_app(settings: CommonSettings, *, relay: bool) -> Any:
    return create_intake(
        service_settings(settings, IntakeSettings, run_outbox_relay=relay)
    )


async def test_the_outbox_backlog_shows_while_no_relay_runs_and_drains_to_zero(
    settings: CommonSettings,
) -> None:
    async with running(intake_app(settings, relay=False)) as intake:
        await post_orders(intake, settings, 3)
        waiting = await gauges(intake)
        ready = await readiness(intake)

    assert event_store_gauge(waiting, UNPUBLISHED) == 3
    oldest = event_store_gauge(waiting, OLDEST_AGE)
    assert oldest is not None
    assert 0 < oldest < SETTLE_SECONDS
    # Not ready here (no relay, so no broker connection), yet the figures are there.
    figures = ready["backlog"]["outboxes"]["event_store"]
    assert figures["unpublished"] == 3
    assert figures["oldest_age_seconds"] > 0

    async with running(intake_app(settings, relay=True)) as relaying:
        drained = await eventually(
            lambda: gauges(relaying),
            lambda g: event_store_gauge(g, UNPUBLISHED) == 0,
        )
        ready = await readiness(relaying)
    assert event_store_gauge(drained, OLDEST_AGE) == 0
    assert ready["backlog"]["outboxes"]["event_store"] == {
        "unpublished": 0,
        "oldest_age_seconds": 0,
    }


def ledger_lag(all_gauges: Gauges) -> dict[frozenset[tuple[str, str]], float]:
    return samples(all_gauges, LAG)


async def read_to_the_end(
    reader: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> bool:
    for tp in partitions:
        highwater = reader.highwater(tp)
        if highwater is None or await reader.position(tp) < highwater:
            return False
    return True


async def records_not_applied(settings: CommonSettings, engine: AsyncEngine) -> int:
    """Counted apart from the service: the records on the topic, read by a client of
    our own, past the ledger's stored offsets."""
    table = ledger_tracking.consumer_offset
    topic = settings.kafka_topic_prefix + ORDER_EVENTS
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(table.c.partition, table.c.offset).where(
                table.c.group_id == LEDGER_GROUP, table.c.topic == topic
            )
        )
        stored = {r.partition: r.offset for r in rows}
    partitions = [
        TopicPartition(topic, p) for p in range(DEFAULT_PARTITIONS[ORDER_EVENTS])
    ]
    reader = create_offset_reader(settings)
    await reader.start()
    try:
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        waiting = 0
        while not await read_to_the_end(reader, partitions):
            fetched = await reader.getmany(timeout_ms=500)
            waiting += sum(
                r.offset > stored.get(tp.partition, -1)
                for tp, records in fetched.items()
                for r in records
            )
    finally:
        await reader.stop()
    return waiting


@asynccontextmanager
async def ledger_blocked(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the ledger's stored offsets: its next batch waits for them, unapplied.

    EXCLUSIVE conflicts with the consumer's SELECT ... FOR UPDATE but not with a
    plain SELECT, which is all the lag measurement needs.
    """
    table = ledger_tracking.consumer_offset
    async with engine.connect() as conn:
        await conn.execute(
            text(f"LOCK TABLE {table.schema}.{table.name} IN EXCLUSIVE MODE")
        )
        yield
        await conn.rollback()


async def test_consumer_lag_shows_while_the_ledger_is_held_up_and_returns_to_zero(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    ledger_settings = service_settings(settings, LedgerSettings, run_consumer=True)
    async with (
        running(intake_app(settings, relay=True)) as intake,
        running(create_ledger(ledger_settings)) as ledger,
    ):
        await post_orders(intake, settings, 1)
        caught_up = await eventually(
            lambda: gauges(ledger),
            lambda g: (
                bool(ledger_lag(g))
                and sum(ledger_lag(g).values()) == 0
                and bool(samples(g, LAST_APPLIED))
            ),
        )
        partitions = ledger_lag(caught_up)
        assert {dict(labels)["group"] for labels in partitions} == {LEDGER_GROUP}
        assert len(partitions) == 6  # every partition of the topic, applied or not

        async with ledger_blocked(engine):
            await post_orders(intake, settings, 4)
            await eventually(
                lambda: gauges(intake),
                lambda g: event_store_gauge(g, UNPUBLISHED) == 0,
            )
            waiting = await records_not_applied(settings, engine)
            assert waiting > 0
            behind = await eventually(
                lambda: gauges(ledger),
                lambda g: sum(ledger_lag(g).values()) == waiting,
            )
            ready = await readiness(ledger)
            # Lag is reported, not a reason to leave the load balancer.
            assert ready["status"] == "ready", ready
            assert ready["backlog"]["consumers"][LEDGER_GROUP]["lag"] == waiting
            assert sum(ledger_lag(behind).values()) == waiting

        await eventually(
            lambda: gauges(ledger), lambda g: sum(ledger_lag(g).values()) == 0
        )
        ages = [
            p["last_applied_record_age_seconds"]
            for p in (await readiness(ledger))["backlog"]["consumers"][LEDGER_GROUP][
                "partitions"
            ]
            if p["last_applied_record_age_seconds"] is not None
        ]
        assert ages
        assert all(0 <= age < SETTLE_SECONDS for age in ages)
