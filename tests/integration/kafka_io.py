"""Small real-Kafka helpers for integration tests: publish envelopes, read a topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tracking import TrackingTables
from shared.domain.lifecycle import OrderEvent
from shared.events.envelope import KAFKA_HEADERS, encode, to_cloudevent
from shared.events.topics import DEAD_LETTER, LEDGER_GROUP, ORDER_EVENTS, SOURCE_INTAKE
from shared.kafka.consumer import EventHandler, TrackingConsumer
from shared.kafka.producer import create_consumer, create_producer
from shared.settings import CommonSettings


def record_value(event: OrderEvent) -> bytes:
    return encode(to_cloudevent(event, source=SOURCE_INTAKE))


async def publish(
    bootstrap: str, topic: str, values: Sequence[tuple[str, bytes]]
) -> None:
    """Send (key, value) pairs in order and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(
                topic, value=value, key=key.encode(), headers=KAFKA_HEADERS
            )
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, *, expected: int, timeout: float = 15.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from the beginning, once `expected` have arrived.

    Waits a little longer after reaching `expected` to catch any extra (duplicate)
    records that should not be there.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_until: float | None = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= expected and settle_until is None:
                settle_until = loop.time() + 0.5
            if settle_until is not None and loop.time() >= settle_until:
                break
    finally:
        await consumer.stop()
    return records


@contextlib.asynccontextmanager
async def consuming(
    engine: AsyncEngine,
    settings: CommonSettings,
    *,
    tracking: TrackingTables,
    handler: EventHandler,
    check_against_store: bool = False,
    parse_payloads: bool = True,
    max_records: int = 2000,
) -> AsyncIterator[TrackingConsumer]:
    """A `TrackingConsumer` of the test's order topic (the ledger's group), running."""
    kafka_consumer = create_consumer(settings, group_id=LEDGER_GROUP)
    producer = create_producer(settings)
    await producer.start()
    await kafka_consumer.start()
    consumer = TrackingConsumer(
        engine=engine,
        consumer=kafka_consumer,
        producer=producer,
        tracking=tracking,
        topics=[settings.kafka_topic_prefix + ORDER_EVENTS],
        handler=handler,
        dead_letter_topic=settings.kafka_topic_prefix + DEAD_LETTER,
        check_against_store=check_against_store,
        parse_payloads=parse_payloads,
        max_records=max_records,
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kafka_consumer.stop()
        await producer.stop()


def consumer_records(
    values: Sequence[bytes | None], first_offset: int = 0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of the order topic as a consumer receives them (partition 0)."""
    return [
        ConsumerRecord(
            topic=ORDER_EVENTS,
            partition=0,
            offset=first_offset + i,
            timestamp=0,
            timestamp_type=0,
            key=None,
            value=value,
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=0 if value is None else len(value),
            headers=KAFKA_HEADERS,
        )
        for i, value in enumerate(values)
    ]
