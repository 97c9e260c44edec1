"""Resources every service's lifespan builds: engine, relay, consumer tasks.

Nothing connects at import time; `lifespan` functions call these with settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypedDict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.base import EVENT_STORE_SCHEMA
from shared.db.engine import create_driver_pool, create_engine
from shared.db.tracking import TrackingTables
from shared.domain.rules import Policy
from shared.events.topics import DEAD_LETTER
from shared.http.backlog import BacklogMonitor, LagSource, OutboxSource
from shared.http.health import ReadinessCheck, database_check
from shared.kafka.consumer import EventHandler, TrackingConsumer
from shared.kafka.lag import PartitionLag, measure_lag
from shared.kafka.producer import (
    create_consumer,
    create_offset_reader,
    create_producer,
)
from shared.orders.writer import OrderWriter
from shared.outbox.backlog import OutboxBacklog, measure_outbox
from shared.outbox.relay import OutboxRelay
from shared.settings import CommonSettings, OutboxSettings

logger = logging.getLogger(__name__)


def relay_broker_check(relay: OutboxRelay) -> ReadinessCheck:
    """Ready when the relay's producer is connected and the broker answers."""

    async def check() -> None:
        producer = relay.producer
        if producer is None:
            raise ConnectionError("the outbox relay is not connected to the broker")
        await producer.client.fetch_all_metadata()

    return check


def outbox_backlog(engine: AsyncEngine, schema: str) -> OutboxSource:
    """A source of one outbox's backlog figures for the `BacklogMonitor`."""

    async def measure() -> OutboxBacklog:
        return await measure_outbox(engine, schema=schema)

    return measure


def producer_factory(settings: CommonSettings) -> Any:
    """A zero-argument factory (aiokafka producers cannot be restarted after stop)."""
    return lambda: create_producer(settings)


def write_policy(settings: CommonSettings) -> Policy:
    """The lifecycle's limits as configured (the rest keep events.md's defaults)."""
    return Policy(
        max_event_age=settings.max_event_age,
        max_events_per_order=settings.max_events_per_order,
        warranty_window=settings.warranty_window,
    )


REFUSAL_SWEEP_INTERVAL: Final = timedelta(hours=1)


async def forget_old_refusals(writer: OrderWriter) -> None:
    """Delete refusals past their retention, hourly (they stopped answering already)."""
    while True:
        try:
            forgotten = await writer.forget_old_refusals(datetime.now(UTC))
            if forgotten:
                logger.info("forgot %d refusals past their retention", forgotten)
        except Exception:
            # A database outage must not end the task; the next sweep catches up.
            logger.exception("forgetting old refusals failed")
        await asyncio.sleep(REFUSAL_SWEEP_INTERVAL.total_seconds())


@contextlib.asynccontextmanager
async def background(*coroutines: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run tasks for the lifetime of the block; cancel and await them on exit."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class ConsumerRunner:
    """Keeps one `TrackingConsumer` running, reconnecting to the broker as needed."""

    def __init__(
        self,
        *,
        settings: CommonSettings,
        engine: AsyncEngine,
        tracking: TrackingTables,
        group_id: str,
        topics: Sequence[str],
        handler: EventHandler,
        check_against_store: bool = False,
    ) -> None:
        self._settings = settings
        self._check_against_store = check_against_store
        self._engine = engine
        self._tracking = tracking
        self._group_id = group_id
        self._topics = topics
        self._handler = handler
        self.consumer: TrackingConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._kafka_consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        while True:
            # The broker's group carries the topic prefix (deployments sharing a
            # cluster must not share groups); stored offsets keep the logical name.
            kafka_consumer = create_consumer(
                self._settings,
                group_id=self._settings.kafka_topic_prefix + self._group_id,
            )
            producer = create_producer(self._settings)
            try:
                await producer.start()
                await kafka_consumer.start()
                self.producer = producer
                self._kafka_consumer = kafka_consumer
                self.consumer = TrackingConsumer(
                    engine=self._engine,
                    consumer=kafka_consumer,
                    producer=producer,
                    tracking=self._tracking,
                    topics=[
                        self._settings.kafka_topic_prefix + t for t in self._topics
                    ],
                    handler=self._handler,
                    group_id=self._group_id,
                    dead_letter_topic=self._settings.kafka_topic_prefix + DEAD_LETTER,
                    check_against_store=self._check_against_store,
                )
                await self.consumer.run()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning(
                    "consumer %s interrupted (%s); retrying", self._group_id, err
                )
                await asyncio.sleep(1.0)
            finally:
                self.producer = None
                self._kafka_consumer = None
                await kafka_consumer.stop()
                await producer.stop()

    async def lag(self) -> list[PartitionLag]:
        """The group's lag on every partition of its topics (needs the broker)."""
        kafka_consumer, consumer = self._kafka_consumer, self.consumer
        if kafka_consumer is None or consumer is None:
            raise ConnectionError(f"consumer {self._group_id} is not connected")
        return await measure_lag(
            self._engine,
            kafka_consumer,
            tracking=self._tracking,
            group=self._group_id,
            topics=[self._settings.kafka_topic_prefix + t for t in self._topics],
            last_applied_record_time=consumer.last_applied_record_time,
        )

    def broker_check(self) -> ReadinessCheck:
        async def check() -> None:
            if self.producer is None:
                raise ConnectionError(f"consumer {self._group_id} is not connected")
            await self.producer.client.fetch_all_metadata()

        return check


class ConsumerServiceState(TypedDict):
    """The lifespan state of a service built around one Kafka consumer."""

    settings: CommonSettings
    engine: AsyncEngine
    consumer: ConsumerRunner
    readiness: dict[str, ReadinessCheck]
    backlog: BacklogMonitor


def consumer_service_lifespan(
    settings: CommonSettings,
    *,
    tracking: TrackingTables,
    group_id: str,
    topics: Sequence[str],
    handler: EventHandler,
    check_against_store: bool = False,
    run_consumer: bool,
    extra_state: dict[str, Any] | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[ConsumerServiceState]]:
    """The lifespan of ledger and metrics: engine, consumer task, readiness.

    `check_against_store`: apply only records the event store holds as they are
    (see `shared.kafka.consumer`); the others are dead-lettered.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[ConsumerServiceState]:
        engine = create_engine(settings)
        runner = ConsumerRunner(
            settings=settings,
            engine=engine,
            tracking=tracking,
            group_id=group_id,
            topics=topics,
            handler=handler,
            check_against_store=check_against_store,
        )
        async with background(*([runner.run()] if run_consumer else [])):
            state = ConsumerServiceState(
                settings=settings,
                engine=engine,
                consumer=runner,
                readiness={
                    "database": database_check(engine),
                    "broker": runner.broker_check(),
                },
                backlog=BacklogMonitor(consumers=[runner.lag]),
            )
            yield {**state, **(extra_state or {})}  # type: ignore[typeddict-item]  # extras by service
        await engine.dispose()

    return lifespan


class WriterServiceState(TypedDict):
    """The lifespan state of a service that appends events (intake, dispatch)."""

    settings: CommonSettings
    engine: AsyncEngine
    writer: OrderWriter
    relay: OutboxRelay
    readiness: dict[str, ReadinessCheck]
    backlog: BacklogMonitor


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """What a writing service consumes: its tracking tables, group, topics, handler."""

    tracking: TrackingTables
    group_id: str
    topics: Sequence[str]
    handler: Callable[[OrderWriter], EventHandler]
    # Apply only records the event store holds as they are (`shared.kafka.consumer`).
    check_against_store: bool = False


def writer_service_lifespan(
    settings: CommonSettings,
    *,
    source: str,
    run_outbox_relay: bool,
    consumer: ConsumerSpec | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[WriterServiceState]]:
    """The lifespan of intake and dispatch: engine, order writer, outbox relay.

    Both run a relay; the relay's advisory lock lets only one publish at a time.
    Dispatch also consumes the order events (auto-assignment).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[WriterServiceState]:
        engine = create_engine(settings)
        outbox = OutboxSettings()
        relay = OutboxRelay(
            engine,
            producer_factory(settings),
            batch_size=outbox.batch_size,
            poll_interval=outbox.poll_interval,
            topic_prefix=settings.kafka_topic_prefix,
            probe_factory=lambda: create_offset_reader(settings),
        )
        pool = await create_driver_pool(settings)
        writer = OrderWriter(
            pool,
            policy=write_policy(settings),
            source=source,
            refusal_retention=settings.refusal_retention,
        )
        tasks = [forget_old_refusals(writer)]
        if run_outbox_relay:
            tasks.append(relay.run())
        readiness = {
            "database": database_check(engine),
            "broker": relay_broker_check(relay),
        }
        lags: list[LagSource] = []
        if consumer is not None:
            runner = ConsumerRunner(
                settings=settings,
                engine=engine,
                tracking=consumer.tracking,
                group_id=consumer.group_id,
                topics=consumer.topics,
                handler=consumer.handler(writer),
                check_against_store=consumer.check_against_store,
            )
            tasks.append(runner.run())
            readiness["consumer"] = runner.broker_check()
            lags.append(runner.lag)
        async with background(*tasks):
            yield WriterServiceState(
                settings=settings,
                engine=engine,
                writer=writer,
                relay=relay,
                readiness=readiness,
                # Measured on every writer, relay leader or not: the outbox table
                # is the same, and a relay cut off from the broker cannot tell.
                backlog=BacklogMonitor(
                    outboxes=[outbox_backlog(engine, EVENT_STORE_SCHEMA)],
                    consumers=lags,
                ),
            )
        await pool.close()
        await engine.dispose()

    return lifespan
