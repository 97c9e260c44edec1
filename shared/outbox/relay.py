"""The outbox relay: publishes stored events to Kafka at least once, in order.

Correctness notes:
- It selects rows still marked unpublished, never "ids after the last one sent": ids
  are taken before commit, so a transaction holding a lower id can commit after a
  higher one; a high-water mark would skip it forever.
- Each order's events keep their order: an order's next event is only appended after
  its previous one committed, so its outbox id is higher; rows go out in id order and
  are marked published only after the broker acknowledged them, and only up to the
  first failure, so a failed send is retried before anything after it is marked.
- Exactly one relay publishes at a time (a session advisory lock): two relays would
  interleave and reorder an order's events.
- Two batches overlap: the next one is selected (leaving out the id range of the one
  in flight) and sent while the previous one's acks are checked and its rows marked.
  Each batch goes out as one Kafka record batch per partition (`send_batch`), each
  key on the partition the default partitioner gives it (murmur2), so an order's
  events share one partition, in order, across versions of this code.
- A broker can lose records it acknowledged (the embedded broker keeps topics in
  memory; on Kafka a topic can be deleted and recreated). The relay stores an
  acknowledged offset per partition with the rows it marks published and checks two
  ways, neither of which costs more as the logs grow or the batches go by:
  * every ack: a log that lost nothing gives each new record an offset above every
    offset it acknowledged before; an ack at or below the highest one the relay saw
    on that partition means the log was truncated or recreated (O(partitions the
    batch wrote), no request to the broker);
  * the logs' end offsets, read once on taking the lead (or reconnecting after a
    failure) before anything is sent, then every `check_interval` in the background
    while batches go on (a loss while no event arrives has no ack to show it): a
    log ending at or below an acknowledged offset lost records.
  On either it settles the batch in flight and heals before sending more
  (`shared.db.reconcile.heal_lost_log`): it re-queues, in version order, what any
  consumer lacks and rewinds the consumers. Records acknowledged by the new log
  before the loss showed (at most the batches in flight, as before this design
  when the broker restarted between the probe and the send) precede the re-queued
  copies; consumers ignore ids they applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition
from opentelemetry.trace import Span, SpanKind, Tracer
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.base import EVENT_STORE_SCHEMA
from shared.db.reconcile import heal_lost_log, record_relay_positions, relay_positions
from shared.events.envelope import KAFKA_HEADERS
from shared.tracing import (
    TRACEPARENT,
    end_spans,
    kafka_attributes,
    parent_context,
    traceparent_of,
)

logger = logging.getLogger(__name__)

RELAY_LOCK_KEY: Final = 0x5E_77_1C_E7_0A_11  # arbitrary, fixed: "the relay" lock
_NONE: Final = 2**63
# A broker that does not answer within this is treated as down (the relay retries).
PROBE_TIMEOUT_SECONDS: Final = 10.0


def relay_lock_key(schema: str) -> int:
    """One leader per outbox: the event store's, and metrics' alerts outbox."""
    return RELAY_LOCK_KEY + zlib.crc32(schema.encode())


class OutboxRelay:
    """Moves outbox rows to Kafka; run `run()` as a background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        producer_factory: Callable[[], AIOKafkaProducer],
        *,
        batch_size: int = 2000,
        poll_interval: timedelta = timedelta(milliseconds=20),
        topic_prefix: str = "",
        schema: str = EVENT_STORE_SCHEMA,
        probe_factory: Callable[[], AIOKafkaConsumer] | None = None,
        check_interval: timedelta = timedelta(seconds=1),
        tracer: Tracer | None = None,
    ) -> None:
        """Describe a relay; `run()` starts it.

        Args:
            probe_factory: a group-less consumer that reads the logs' end offsets.
                Given (the event store's relay), the relay detects and heals a
                broker that lost acknowledged records; the alerts outbox has no
                consumer of ours to heal.
            check_interval: how often the relay compares its positions with the
                logs' ends (in the background; a loss while no new event arrives
                shows in no acknowledgement).
            tracer: traced, each row stored with a `traceparent` is published in a
                span that is its child, and its record carries the span's context
                in a `traceparent` header (see `shared.tracing`).
        """
        if probe_factory is not None and schema != EVENT_STORE_SCHEMA:
            raise ValueError("only the event store's relay heals lost records")
        self._engine = engine
        self._tracer = tracer
        self._producer_factory = producer_factory
        self._probe_factory = probe_factory
        self._probe: AIOKafkaConsumer | None = None
        self._check_seconds = check_interval.total_seconds()
        self._last_check = float("-inf")
        self._probing: asyncio.Task[tuple[set[str], str]] | None = None
        # The highest offset acknowledged per partition while this relay leads.
        self._highest: dict[TopicPartition, int] = {}
        self._in_flight: _Batch | None = None
        self.producer: AIOKafkaProducer | None = None
        self._batch_size = batch_size
        self._topic_prefix = topic_prefix
        self._lock_key = relay_lock_key(schema)
        self._select_batch = text(
            f"SELECT id, topic, key, value FROM {schema}.outbox_message "  # noqa: S608
            # Not the batch in flight (sent, not yet marked): rows that commit late
            # inside its id range wait one batch more, never longer.
            "WHERE published_at IS NULL AND id NOT BETWEEN :low AND :high "
            "ORDER BY id LIMIT :limit"
        )
        self._mark_published = text(
            f"UPDATE {schema}.outbox_message SET published_at = now() "  # noqa: S608
            "WHERE id = ANY(:ids)"
        )
        self._count_backlog = text(
            f"SELECT count(*) FROM {schema}.outbox_message "  # noqa: S608
            "WHERE published_at IS NULL"
        )
        self._poll_seconds = poll_interval.total_seconds()
        self.published_total = 0
        self.heals_total = 0
        self.is_leader = False

    async def run(self) -> None:
        """Connect, wait for leadership, publish until cancelled; heal from failures.

        The broker may be down when the service starts or at any time later: events
        are still accepted (the outbox is the durable truth) and drain once it is back.
        """
        while True:
            producer = self._producer_factory()
            probe = None if self._probe_factory is None else self._probe_factory()
            try:
                await producer.start()
                if probe is not None:
                    await probe.start()
                    self._probe = probe
                self.producer = producer
                async with self._engine.connect() as lock_conn:
                    try:
                        await self._lead(lock_conn)
                    finally:
                        # The lock belongs to the session: back in the pool, this
                        # connection would keep holding it and every later attempt
                        # to lead, on another connection, would wait forever.
                        await lock_conn.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning("outbox relay interrupted (%s); retrying in 1 s", err)
                await asyncio.sleep(1.0)
            finally:
                self.is_leader = False
                self.producer = None
                self._probe = None
                await self._stop_probing()
                await producer.stop()
                if probe is not None:
                    await probe.stop()

    async def _lead(self, lock_conn: AsyncConnection) -> None:
        # Standby relays poll the lock: PostgreSQL offers no wake-up on release.
        while not await self._try_lock(lock_conn):  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        self.is_leader = True
        logger.info("outbox relay is the leader")
        # Before anything is sent on this connection: the broker may have lost its
        # logs while no relay led, or while this one was reconnecting.
        self._highest = {}
        self._in_flight = None
        await self.heal_if_lost()
        while True:
            await self._heal_if_probe_found_loss()
            sent = await self.publish_batch()
            self._start_probe_if_due()
            if sent < self._batch_size:
                # Idle: nothing stays sent but unmarked while waiting for rows.
                await self._heal_if_lost_in(await self._settle(self._take_in_flight()))
                await asyncio.sleep(self._poll_seconds)

    async def _try_lock(self, lock_conn: AsyncConnection) -> bool:
        # The lock lives as long as this connection: a dead relay frees it at once.
        locked = await lock_conn.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": self._lock_key}
        )
        await lock_conn.commit()
        return bool(locked)

    async def publish_batch(self) -> int:
        """Send one batch of unpublished rows, then settle the one sent before it.

        Two batches overlap: while the broker takes this one, the previous one's
        acknowledgements are checked and its rows marked published. Returns how
        many rows were sent.
        """
        low, high = (1, 0) if self._in_flight is None else self._in_flight.ids
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    self._select_batch,
                    {"limit": self._batch_size, "low": low, "high": high},
                )
            ).all()
            await conn.commit()
        previous = self._take_in_flight()
        if rows:
            assert self.producer is not None, "publish_batch runs inside run()"
            self._in_flight = await _Batch.send(
                self.producer, rows, self._topic_prefix, tracer=self._tracer
            )
        lost = await self._settle(previous)
        if lost:  # the batch just sent went to the same broker: settle it first
            lost |= await self._settle(self._take_in_flight())
        await self._heal_if_lost_in(lost)
        return len(rows)

    def _take_in_flight(self) -> _Batch | None:
        batch, self._in_flight = self._in_flight, None
        return batch

    async def _settle(self, batch: _Batch | None) -> set[str]:
        """Mark the acknowledged prefix of `batch` published; raise its first failure.

        Returns the topics whose acks reveal a log that lost records.
        """
        if batch is None:
            return set()
        outcomes = await asyncio.gather(
            *(chunk.acknowledgement() for chunk in batch.chunks),
            return_exceptions=True,
        )
        positions: dict[TopicPartition, int] = {}
        highest = self._highest
        lost: set[str] = set()
        failed: set[int] = set()
        failure: BaseException | None = None
        for index, (chunk, outcome) in enumerate(
            zip(batch.chunks, outcomes, strict=True)
        ):
            if isinstance(outcome, BaseException):
                failed.add(index)
                failure = failure or outcome
                continue
            position = outcome.topic_partition
            # A log that lost nothing numbers each record above all it acknowledged.
            if outcome.offset <= highest.get(position, -1):
                lost.add(position.topic)
            last = outcome.offset + chunk.count - 1
            highest[position] = max(last, highest.get(position, -1))
            # A record batch's first offset, not its last: Tansu reports a log's
            # end as its last record batch's base offset + 1, so only offsets that
            # start a batch are sure to lie below the end it reports.
            positions[position] = min(outcome.offset, positions.get(position, _NONE))
        if batch.spans:
            batch.end_spans(outcomes)
        # Rows in id order up to the first whose record batch failed.
        acked = batch.ids_before(failed)
        if acked:
            async with self._engine.begin() as conn:
                await conn.execute(self._mark_published, {"ids": acked})
                if self._probe_factory is not None:
                    await record_relay_positions(conn, positions)
            self.published_total += len(acked)
        if failure is not None:
            raise failure
        return lost if self._probe_factory is not None else set()

    async def _heal_if_lost_in(self, lost: set[str]) -> None:
        if lost:
            await self._heal(lost, found="an ack at or below an earlier offset")

    async def heal_if_lost(self) -> bool:
        """Heal if a log ends at or below an offset the broker acknowledged to us.

        Returns whether it healed. Raises what the broker raises when it cannot
        answer (the caller's retry loop waits for it).
        """
        if self._probe is None:
            return False
        await self._stop_probing()
        lost, found = await self._lost_topics()
        if lost:
            await self._heal(lost, found=found)
        return bool(lost)

    async def _lost_topics(self) -> tuple[set[str], str]:
        """Topics whose log ends at or below an acknowledged offset (and the figures).

        The positions are read before the ends: each was acknowledged before the
        request, so a log that lost nothing ends above it.
        """
        assert self._probe is not None
        self._last_check = time.monotonic()
        async with self._engine.connect() as conn:
            positions = await relay_positions(conn)
        for position, offset in positions.items():
            self._highest[position] = max(offset, self._highest.get(position, -1))
        if not positions:
            return set(), ""
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            ends = await self._probe.end_offsets(list(positions))
        lost = {
            tp.topic for tp, offset in positions.items() if ends.get(tp, 0) <= offset
        }
        found = (
            f"log ends {_by_partition(ends)}, acknowledged up to "
            f"{_by_partition(positions)}"
        )
        return lost, found

    def _start_probe_if_due(self) -> None:
        """Read the logs' ends in the background, at most once per `check_interval`."""
        if self._probe is None or self._probing is not None:
            return
        if time.monotonic() - self._last_check >= self._check_seconds:
            self._probing = asyncio.create_task(self._lost_topics())

    async def _heal_if_probe_found_loss(self) -> None:
        probing = self._probing
        if probing is None or not probing.done():
            return
        self._probing = None
        lost, found = probing.result()  # a broker that did not answer: retry
        if lost:
            lost |= await self._settle(self._take_in_flight())
            await self._heal(lost, found=found)

    async def _stop_probing(self) -> None:
        probing, self._probing = self._probing, None
        if probing is not None:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await probing

    async def _heal(self, lost: set[str], *, found: str) -> None:
        # A probe begun before the healing compares the old positions with the
        # new log: it would find the same loss again.
        await self._stop_probing()
        logger.warning(
            "the broker lost acknowledged records of %s (%s); re-publishing what "
            "the consumers lack",
            ", ".join(sorted(lost)),
            found,
        )
        async with self._engine.begin() as conn:
            requeued = await heal_lost_log(conn, kafka_topics=lost)
        self._highest = {
            tp: offset for tp, offset in self._highest.items() if tp.topic not in lost
        }
        self.heals_total += 1
        logger.warning("re-queued %d event(s) after the broker's loss", requeued)

    async def backlog(self) -> int:
        """How many outbox rows wait to be published."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(self._count_backlog)
        return int(value or 0)


@dataclass(slots=True)
class _Chunk:
    """One Kafka record batch of one partition, and its acknowledgement."""

    topic: str
    partition: int
    builder: BatchBuilder
    count: int = 0
    acked: asyncio.Future[RecordMetadata] | None = None

    def append(
        self,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]] = KAFKA_HEADERS,
    ) -> bool:
        """Add one record; False when the batch is full."""
        added = self.builder.append(
            timestamp=None, key=key, value=value, headers=headers
        )
        self.count += added is not None
        return added is not None

    def acknowledgement(self) -> asyncio.Future[RecordMetadata]:
        assert self.acked is not None, "every chunk is submitted in _Batch.send"
        return self.acked

    async def submit(self, producer: AIOKafkaProducer) -> None:
        self.acked = await producer.send_batch(
            self.builder, self.topic, partition=self.partition
        )


@dataclass(frozen=True, slots=True)
class _Batch:
    """Outbox rows sent to the broker: each row's record batch (chunk) in order."""

    rows: Sequence[Row[Any]]
    chunk_of_row: list[int]
    chunks: list[_Chunk]
    # Traced: each row's publish span (None: the row had no trace context) and its
    # place in its chunk (its offset is the chunk's base offset plus that place).
    spans: list[Span | None] | None = None
    place_in_chunk: list[int] | None = None

    @property
    def ids(self) -> tuple[int, int]:
        return self.rows[0].id, self.rows[-1].id

    def ids_before(self, failed: set[int]) -> list[int]:
        """Row ids in order, up to the first row of a failed chunk."""
        if not failed:
            return [row.id for row in self.rows]
        acked: list[int] = []
        for row, chunk in zip(self.rows, self.chunk_of_row, strict=True):
            if chunk in failed:
                break
            acked.append(row.id)
        return acked

    def end_spans(self, outcomes: Sequence[RecordMetadata | BaseException]) -> None:
        """End each row's publish span with its record's offset, or its failure."""
        assert self.spans is not None
        assert self.place_in_chunk is not None
        for span, chunk, place in zip(
            self.spans, self.chunk_of_row, self.place_in_chunk, strict=True
        ):
            if span is None:
                continue
            outcome = outcomes[chunk]
            if isinstance(outcome, BaseException):
                end_spans([span], outcome)
                continue
            span.set_attribute("messaging.kafka.offset", outcome.offset + place)
            span.end()

    @classmethod
    async def send(
        cls,
        producer: AIOKafkaProducer,
        rows: Sequence[Row[Any]],
        prefix: str,
        *,
        tracer: Tracer | None = None,
    ) -> _Batch:
        """Fill one record batch per partition and hand each to the producer.

        What `producer.send` does per record (metadata wait, partition list, one
        future each), done once per batch; the partition is the key's murmur2 hash,
        as the default partitioner picks it, so keys keep their partitions.
        """
        partitions: dict[str, list[int]] = {}
        open_chunks: dict[tuple[str, int], int] = {}
        chunks: list[_Chunk] = []
        chunk_of_row: list[int] = []
        spans: list[Span | None] | None = None if tracer is None else []
        place_in_chunk: list[int] = []
        for row in rows:
            topic, key = prefix + row.topic, row.key.encode()
            of_topic = partitions.get(topic)
            if of_topic is None:
                of_topic = partitions[topic] = sorted(
                    await producer.partitions_for(topic)
                )
            partition = of_topic[(murmur2(key) & 0x7FFFFFFF) % len(of_topic)]
            headers = KAFKA_HEADERS
            if tracer is not None and spans is not None:
                span = _publish_span(tracer, row, topic=topic, partition=partition)
                spans.append(span)
                if span is not None:
                    headers = [*KAFKA_HEADERS, (TRACEPARENT, _encoded(span))]
            index = open_chunks.get((topic, partition))
            if index is None or not chunks[index].append(key, row.value, headers):
                if index is not None:  # full: on its way while the next fills
                    await chunks[index].submit(producer)
                index = open_chunks[topic, partition] = len(chunks)
                chunks.append(_Chunk(topic, partition, producer.create_batch()))
                if not chunks[index].append(key, row.value, headers):
                    raise ValueError(f"outbox row {row.id} exceeds a record batch")
            chunk_of_row.append(index)
            if spans is not None:
                place_in_chunk.append(chunks[index].count - 1)
        for index in open_chunks.values():
            await chunks[index].submit(producer)
        if spans is None:
            return cls(rows, chunk_of_row, chunks)
        return cls(rows, chunk_of_row, chunks, spans, place_in_chunk)


def _publish_span(
    tracer: Tracer, row: Row[Any], *, topic: str, partition: int
) -> Span | None:
    """The publish span of a row stored with a trace context (its child), or None."""
    envelope = orjson.loads(row.value)
    parent = parent_context(envelope.get(TRACEPARENT))
    if parent is None:
        return None
    return tracer.start_span(
        f"send {topic}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            **kafka_attributes(topic=topic, partition=partition),
            "messaging.operation.type": "send",
            "messaging.kafka.message.key": row.key,
            "cloudevents.event_id": str(envelope.get("id")),
            "cloudevents.event_type": str(envelope.get("type")),
            "servicetrail.order_id": row.key,
            "servicetrail.outbox_id": row.id,
        },
    )


def _encoded(span: Span) -> bytes:
    traceparent = traceparent_of(span)
    assert traceparent is not None  # a span started in a valid context is valid
    return traceparent.encode()


def _by_partition(offsets: Mapping[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}/{tp.partition}": offset for tp, offset in offsets.items()}
