"""The outbox relay: at least once, in order per order, never skipping a late commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.event_store import outbox_message
from shared.events.topics import ORDER_EVENTS
from shared.kafka.producer import create_producer
from shared.outbox.relay import OutboxRelay
from shared.settings import CommonSettings
from tests.builders import happy_path_history
from tests.integration.kafka_io import read_topic
from tests.integration.store_io import append_stored

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def relay_running(
    engine: AsyncEngine, settings: CommonSettings
) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(
        engine,
        lambda: create_producer(settings),
        poll_interval=timedelta(milliseconds=10),
        topic_prefix=settings.kafka_topic_prefix,
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(outbox_message)
                .where(outbox_message.c.published_at.is_(None))
            )
            or 0
        )


async def wait_until_drained(engine: AsyncEngine, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await unpublished(engine):
            await asyncio.sleep(0.02)


async def test_a_lower_id_committed_after_a_higher_one_is_still_published(
    engine: AsyncEngine, settings: CommonSettings
) -> None:
    early, late = happy_path_history()[0], happy_path_history()[0]
    topic = settings.kafka_topic_prefix + ORDER_EVENTS
    async with relay_running(engine, settings):
        async with engine.connect() as slow:
            slow_tx = await slow.begin()
            await append_stored(slow, early)  # takes the lower outbox id, commits last
            async with engine.begin() as fast:
                await append_stored(fast, late)
            await wait_until_drained(engine)  # the relay has sent `late` already
            await slow_tx.commit()
        await wait_until_drained(engine)
    records = await read_topic(settings.kafka_bootstrap_servers, topic, expected=2)
    ids = sorted(json.loads(r.value)["id"] for r in records)
    assert ids == sorted([str(early.event_id), str(late.event_id)])


async def test_each_orders_events_reach_kafka_in_version_order(
    engine: AsyncEngine, settings: CommonSettings
) -> None:
    histories = [happy_path_history() for _ in range(5)]
    async with relay_running(engine, settings):
        # Interleave the orders' appends, one transaction per event, as services do.
        for step in range(max(len(h) for h in histories)):
            for history in histories:
                if step < len(history):
                    async with engine.begin() as conn:
                        await append_stored(conn, history[step])
        await wait_until_drained(engine)
    total = sum(len(h) for h in histories)
    topic = settings.kafka_topic_prefix + ORDER_EVENTS
    records = await read_topic(settings.kafka_bootstrap_servers, topic, expected=total)
    assert len(records) == total
    by_order: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        envelope = json.loads(record.value)
        assert record.key == envelope["subject"].encode()
        by_order.setdefault(envelope["subject"], []).append(envelope["orderversion"])
    assert all(versions == sorted(versions) for versions in by_order.values())
    assert {len(v) for v in by_order.values()} == {len(h) for h in histories}


async def test_only_one_of_two_relays_publishes(
    engine: AsyncEngine, settings: CommonSettings
) -> None:
    async with (
        relay_running(engine, settings) as first,
        relay_running(engine, settings) as second,
    ):
        async with asyncio.timeout(10):
            while not (first.is_leader or second.is_leader):
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert first.is_leader != second.is_leader
