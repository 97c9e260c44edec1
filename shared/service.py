"""The one lifespan of every service, and the resources it opens from settings.

Nothing connects at import time: each `create_app` hands `service_lifespan` a
function that opens what its service needs when the application starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias, TypedDict, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.base import EVENT_STORE_SCHEMA
from shared.db.engine import create_driver_pool, create_engine
from shared.db.tracking import TrackingTables
from shared.domain.rules import Policy
from shared.events.topics import DEAD_LETTER
from shared.http.backlog import BacklogMonitor, LagSource, OutboxSource
from shared.http.health import ReadinessCheck, database_check
from shared.kafka.consumer import EventHandler, RecordParser, TrackingConsumer
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
from shared.tracing import TRACING_OFF, Tracing

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
        parse_payloads: bool = True,
        parser: RecordParser | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._settings = settings
        self._tracer = tracer
        self._parser = parser
        self._check_against_store = check_against_store
        self._parse_payloads = parse_payloads
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
                    parse_payloads=self._parse_payloads,
                    parser=self._parser,
                    tracer=self._tracer,
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


class ServiceState(TypedDict):
    """What every service's lifespan yields (`shared.http` reads these keys)."""

    settings: CommonSettings
    engine: AsyncEngine
    readiness: dict[str, ReadinessCheck]
    backlog: BacklogMonitor


class WriterState(ServiceState):
    """The state of a service that appends events (intake, dispatch)."""

    writer: OrderWriter
    relay: OutboxRelay


TaskFactory: TypeAlias = Callable[[], Coroutine[Any, Any, None]]


class ServiceResources:
    """What one service start opens beside its engine, gathered before tasks run.

    A service's `open` function (see `service_lifespan`) adds its relay, consumers,
    order writer and background tasks here, then builds its state from `state()`.
    Tasks start only once everything is open, and stop before anything closes.
    """

    def __init__(
        self,
        settings: CommonSettings,
        engine: AsyncEngine,
        *,
        exits: contextlib.AsyncExitStack,
        tracing: Tracing = TRACING_OFF,
    ) -> None:
        self.settings = settings
        self.engine = engine
        # The service's tracer, or None (off): handed to every traced component.
        self.tracer = tracing.tracer
        self._exits = exits
        self._tasks: list[TaskFactory] = []
        self._readiness: dict[str, ReadinessCheck] = {
            "database": database_check(engine)
        }
        self._outboxes: list[OutboxSource] = []
        self._lags: list[LagSource] = []

    @property
    def tasks(self) -> Sequence[TaskFactory]:
        """The background tasks to run for the service's lifetime, in order."""
        return tuple(self._tasks)

    def add_task(self, task: TaskFactory) -> None:
        """Run `task()` for the service's lifetime (cancelled at shutdown)."""
        self._tasks.append(task)

    def add_readiness(self, name: str, check: ReadinessCheck) -> None:
        """Report `check` in `/readyz` as `name` (not ready while it raises)."""
        self._readiness[name] = check

    def add_relay(
        self, *, schema: str, run: bool, readiness: str = "broker"
    ) -> OutboxRelay:
        """The outbox relay of `schema`; with `run`, it competes for leadership.

        Its readiness check is named `readiness`. The backlog is measured whether
        the relay runs or not: the outbox table is the same for every writer, and a
        relay cut off from the broker cannot tell.
        """
        settings = self.settings
        outbox = OutboxSettings()
        relay = OutboxRelay(
            self.engine,
            producer_factory(settings),
            batch_size=outbox.batch_size,
            poll_interval=outbox.poll_interval,
            topic_prefix=settings.kafka_topic_prefix,
            schema=schema,
            # Only the event store's relay heals a broker that lost records: the
            # other outboxes (alerts) have no consumer of ours to heal.
            probe_factory=(
                (lambda: create_offset_reader(settings))
                if schema == EVENT_STORE_SCHEMA
                else None
            ),
            tracer=self.tracer,
        )
        if run:
            self.add_task(relay.run)
        self._readiness[readiness] = relay_broker_check(relay)
        self._outboxes.append(outbox_backlog(self.engine, schema))
        return relay

    def add_consumer(
        self,
        *,
        tracking: TrackingTables,
        group_id: str,
        topics: Sequence[str],
        handler: EventHandler,
        check_against_store: bool,
        run: bool,
        readiness: str = "broker",
        parse_payloads: bool = True,
        parser: RecordParser | None = None,
    ) -> ConsumerRunner:
        """A consumer of `topics` as `group_id`; with `run`, it consumes.

        `check_against_store`: apply only records the event store holds as they are
        (see `shared.kafka.consumer`); the others are dead-lettered. Without
        `parse_payloads`, the handler gets records parsed as far as their header.
        """
        runner = ConsumerRunner(
            settings=self.settings,
            engine=self.engine,
            tracking=tracking,
            group_id=group_id,
            topics=topics,
            handler=handler,
            check_against_store=check_against_store,
            parse_payloads=parse_payloads,
            parser=parser,
            tracer=self.tracer,
        )
        if run:
            self.add_task(runner.run)
        self._readiness[readiness] = runner.broker_check()
        self._lags.append(runner.lag)
        return runner

    async def open_order_writer(self, *, source: str) -> OrderWriter:
        """The order writer on its own driver pool, and its hourly refusal sweep."""
        pool = await create_driver_pool(self.settings)
        self._exits.push_async_callback(pool.close)
        writer = OrderWriter(
            pool,
            policy=write_policy(self.settings),
            source=source,
            refusal_retention=self.settings.refusal_retention,
            tracer=self.tracer,
        )
        self.add_task(functools.partial(forget_old_refusals, writer))
        return writer

    def state(self) -> ServiceState:
        """The state every service yields; services add their own keys to it."""
        return ServiceState(
            settings=self.settings,
            engine=self.engine,
            readiness=dict(self._readiness),
            backlog=BacklogMonitor(outboxes=self._outboxes, consumers=self._lags),
        )


StateT = TypeVar("StateT", bound=ServiceState)


def service_lifespan(
    settings: CommonSettings,
    open_resources: Callable[[ServiceResources], Awaitable[StateT]],
) -> Callable[[FastAPI], AbstractAsyncContextManager[StateT]]:
    """The lifespan of every service: engine, the service's resources, its tasks.

    `open_resources` adds the service's relay, consumers and tasks and returns its
    state. At shutdown the tasks are cancelled and awaited first, then whatever was
    opened closes in reverse order, the engine last. Nothing connects before the
    application starts. The service's tracing is the one `build_app` put on the app
    (`app.state.tracing`); spans still buffered are flushed after everything closed.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[StateT]:
        tracing: Tracing = getattr(app.state, "tracing", TRACING_OFF)
        async with contextlib.AsyncExitStack() as exits:
            # Last out: flushing may wait on the exporter, off the event loop.
            exits.push_async_callback(asyncio.to_thread, tracing.shutdown)
            engine = create_engine(settings)
            exits.push_async_callback(engine.dispose)
            resources = ServiceResources(settings, engine, exits=exits, tracing=tracing)
            state = await open_resources(resources)
            async with background(*(task() for task in resources.tasks)):
                yield state

    return lifespan
