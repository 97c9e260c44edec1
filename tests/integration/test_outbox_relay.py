"""The outbox relay: at least once, in order per order, never skipping a late commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.stack.broker import EmbeddedBroker, create_topics
from services.stack.servers import free_port
from shared.db.event_store import outbox_message
from shared.domain.lifecycle import OrderEvent
from shared.events.topics import ORDER_EVENTS
from shared.kafka.producer import create_offset_reader, create_producer
from shared.outbox.relay import OutboxRelay
from shared.settings import CommonSettings
from tests.builders import happy_path_history
from tests.integration.kafka_io import read_topic
from tests.integration.store_io import append_stored

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def relay_running(
    engine: AsyncEngine,
    settings: CommonSettings,
    *,
    healing_every: timedelta | None = None,
) -> AsyncIterator[OutboxRelay]:
    """A relay; with `healing_every`, one that probes the logs that often and heals."""
    relay = OutboxRelay(
        engine,
        lambda: create_producer(settings),
        poll_interval=timedelta(milliseconds=10),
        topic_prefix=settings.kafka_topic_prefix,
        probe_factory=(
            None if healing_every is None else lambda: create_offset_reader(settings)
        ),
        check_interval=healing_every or timedelta(seconds=1),
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


@dataclass(frozen=True, slots=True)
class PrivateBroker:
    broker: EmbeddedBroker
    topic: str
    relay: OutboxRelay

    async def lose_everything(self) -> None:
        """Restart the broker (it forgets every record), re-create the topic."""
        await asyncio.to_thread(self.broker.kill)
        await asyncio.to_thread(self.broker.restart)
        await create_topics(self.broker.bootstrap_servers, {self.topic: 3})

    async def read(self, expected: int) -> list[ConsumerRecord[bytes, bytes]]:
        records = await read_topic(
            self.broker.bootstrap_servers, self.topic, expected=expected
        )
        # Each key on the partition aiokafka's own `send` would have chosen.
        assert all(
            r.partition == DefaultPartitioner()(r.key, [0, 1, 2], [0, 1, 2])
            for r in records
        )
        return records


@contextlib.asynccontextmanager
async def healing_relay(
    engine: AsyncEngine,
    settings: CommonSettings,
    tmp_path: Path,
    *,
    healing_every: timedelta,
) -> AsyncIterator[PrivateBroker]:
    """A healing relay on a broker of this test's own (to restart)."""
    broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    try:
        settings = settings.model_copy(
            update={"kafka_bootstrap_servers": broker.bootstrap_servers}
        )
        topic = settings.kafka_topic_prefix + ORDER_EVENTS
        await create_topics(broker.bootstrap_servers, {topic: 3})
        async with relay_running(
            engine, settings, healing_every=healing_every
        ) as relay:
            yield PrivateBroker(broker, topic, relay)
    finally:
        await asyncio.to_thread(broker.stop)


async def store_each(engine: AsyncEngine, events: list[OrderEvent]) -> None:
    for event in events:
        async with engine.begin() as conn:
            await append_stored(conn, event)


async def wait_for_heals(relay: OutboxRelay, count: int) -> None:
    async with asyncio.timeout(30):
        while relay.heals_total < count:
            await asyncio.sleep(0.02)


def versions_by_order(
    records: Sequence[ConsumerRecord[bytes, bytes]],
) -> dict[str, list[int]]:
    """Each order's versions in the order its partition holds them."""
    by_order: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        envelope = json.loads(record.value)
        by_order.setdefault(envelope["subject"], []).append(envelope["orderversion"])
    return by_order


async def test_an_ack_below_an_earlier_one_heals_without_waiting_for_a_probe(
    engine: AsyncEngine, settings: CommonSettings, tmp_path: Path
) -> None:
    histories = [happy_path_history() for _ in range(3)]
    # The logs' ends are read once, on taking the lead, and then not for an hour.
    async with healing_relay(
        engine, settings, tmp_path, healing_every=timedelta(hours=1)
    ) as private:
        await store_each(engine, [e for h in histories for e in h[:2]])
        await wait_until_drained(engine)
        producer = private.relay.producer
        await private.lose_everything()
        await store_each(engine, [h[2] for h in histories])
        await wait_for_heals(private.relay, 1)
        await wait_until_drained(engine)
        # The same producer all along: no send failed, the acks told.
        assert private.relay.producer is producer
        # Up to three third events went into the new log before the loss showed
        # (the healing supersedes those not sent yet), then every event again.
        records = await private.read(expected=10)
        assert private.relay.heals_total == 1
    assert 10 <= len(records) <= 12
    versions = versions_by_order(records)
    assert versions.keys() == {str(h[0].order_id) for h in histories}
    assert all(v in ([1, 2, 3], [3, 1, 2, 3]) for v in versions.values()), versions


async def test_a_loss_while_nothing_is_sent_heals_within_the_check_interval(
    engine: AsyncEngine, settings: CommonSettings, tmp_path: Path
) -> None:
    histories = [happy_path_history()[:2] for _ in range(3)]
    async with healing_relay(
        engine, settings, tmp_path, healing_every=timedelta(milliseconds=100)
    ) as private:
        await store_each(engine, [e for h in histories for e in h])
        await wait_until_drained(engine)
        assert private.relay.heals_total == 0
        await private.lose_everything()
        await wait_for_heals(private.relay, 1)
        await wait_until_drained(engine)
        records = await private.read(expected=6)
        assert private.relay.heals_total == 1
    assert versions_by_order(records) == {str(h[0].order_id): [1, 2] for h in histories}
