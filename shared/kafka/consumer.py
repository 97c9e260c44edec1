"""Kafka consumer base: offsets stored with the effect, duplicates ignored, poison to DLQ.

Every batch runs in one database transaction that (1) skips records at or below the
stored offset of their partition, (2) drops events whose id was already processed
(the relay publishes at least once), (3) applies the handler, and (4) stores the new
offsets. Commit or roll back together: a crash anywhere means the batch is simply
read again. Kafka's own committed offsets are never used.

Consumers of the order topic may trust only the event store, not the wire: with
`check_against_store`, each batch's records are compared with the stored events in
one query before anything is applied, and a record the store does not hold (forged)
or holds otherwise (altered) goes to the dead-letter topic with the reason in its
headers instead of being applied. It is dropped before its id is marked processed,
so the genuine event with that id or version, arriving later, is applied normally.

A record that fails on its own (bad JSON, a handler error) is retried a few times,
then sent to the dead-letter topic with the error in its headers, and its offset is
stored so the consumer goes on. A database outage (or a missing grant) is not a
record's fault: the batch is retried from the stored offsets after a pause, never
dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeAlias
from uuid import UUID

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord, TopicPartition
from opentelemetry.trace import Span, SpanKind, Tracer
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import select, tuple_
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.engine import driver_of
from shared.db.event_store import match_stored
from shared.db.tracking import TrackingTables
from shared.domain.errors import DomainError
from shared.domain.events import full_type
from shared.domain.lifecycle import OrderEvent
from shared.events.envelope import Envelope, parse_envelope, parse_order_event
from shared.events.provenance import rejection
from shared.events.topics import DEAD_LETTER
from shared.tracing import (
    TRACEPARENT,
    end_spans,
    header_traceparent,
    kafka_attributes,
    parent_context,
)

logger = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 3
UNTRUSTED_RECORD: Final = "UntrustedRecord"
# Any increase means someone who may produce to the topic is not the relay: alert on
# it. The reason label is the verdict's first word (forged, altered): bounded values.
RECORDS_REJECTED: Final = Counter(
    "servicetrail_consumer_records_rejected_total",
    "Records not applied because the event store does not hold them so "
    "(dead-lettered).",
    ["group", "reason"],
)
INFRASTRUCTURE_ERRORS: Final = (
    OSError,
    OperationalError,
    InterfaceError,
    asyncpg.InterfaceError,  # e.g. the connection is closed
)
INSUFFICIENT_PRIVILEGE: Final = "42501"  # SQLSTATE
# Connection exceptions; the server shutting down or starting up.
UNAVAILABLE_SQLSTATES: Final = ("08", "57P01", "57P02", "57P03")


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """What identifies an order event and places it in time, read from the record
    without validating its payload (see `parse_header`)."""

    event_id: UUID
    order_id: UUID
    version: int
    type: str  # the CloudEvents type, e.g. servicetrail.order.created
    time: datetime
    recorded_at: datetime


class ConsumedEvent:
    """An order event's record: its header always, the whole event on first use.

    `canonical` is the record's RFC 8785 bytes when the store check confirmed them
    (None otherwise). `span` is its apply span while the handler runs, when traced:
    a handler that appends on the event's behalf continues its trace there.
    """

    __slots__ = ("_event", "canonical", "header", "record", "span")

    def __init__(
        self,
        record: ConsumerRecord[bytes, bytes],
        header: RecordHeader,
        *,
        event: OrderEvent | None = None,
        canonical: bytes | None = None,
    ) -> None:
        self.record = record
        self.header = header
        self.canonical = canonical
        self._event = event
        self.span: Span | None = None

    @property
    def event(self) -> OrderEvent:
        """The validated domain event (parsed now if only the header was)."""
        if self._event is None:
            self._event = parse_record(self.record).event
        return self._event

    @property
    def envelope(self) -> Envelope:
        """The record's envelope, parsed on demand (handlers rarely need more than
        the event; building it for every record cost as much as the event itself)."""
        return parse_envelope(_value(self.record))

    def confirmed(self, canonical: bytes | None) -> ConsumedEvent:
        """The same record, its canonical bytes confirmed by the store check."""
        return ConsumedEvent(
            self.record, self.header, event=self._event, canonical=canonical
        )


RecordParser: TypeAlias = Callable[[ConsumerRecord[bytes, bytes]], "ConsumedEvent"]
# The "order" of a record that belongs to no order (a quality event): only the store
# check reads a header's order, and it never runs on such records.
NO_ORDER: Final = UUID(int=0)


class EventHandler(Protocol):
    """A consumer's effect: applied inside the batch transaction."""

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        """Apply new (never seen) events, in record order."""


class PoisonRecord(Exception):
    """A record that cannot be parsed into an order event."""


class PositionRewound(Exception):
    """The database's stored offsets went back (a metrics rebuild, an operator):
    the records fetched past them must be read again from there."""

    def __init__(self, partitions: Sequence[TopicPartition]) -> None:
        super().__init__(f"stored offsets rewound for {list(partitions)}")
        self.partitions = list(partitions)


def parse_record(record: ConsumerRecord[bytes, bytes]) -> ConsumedEvent:
    """Parse a structured-mode CloudEvents record; raise PoisonRecord if impossible."""
    if record.value is None:
        raise PoisonRecord("record has no value")
    try:
        event = parse_order_event(record.value)
    except (ValidationError, DomainError, ValueError) as err:
        raise PoisonRecord(str(err)) from err
    header = RecordHeader(
        event.event_id,
        event.order_id,
        event.version,
        full_type(type(event.data)),
        event.time,
        event.recorded_at,
    )
    return ConsumedEvent(record, header, event=event)


def parse_header(record: ConsumerRecord[bytes, bytes]) -> ConsumedEvent:
    """Only the record's header fields, typed; raise PoisonRecord if impossible.

    For handlers that need no payload (the ledger), with the store check: a record
    is applied only if the event store holds it as it is, and the store holds only
    validated events, so the payload need not be validated again here. A fifth of
    `parse_record`'s cost.
    """
    if record.value is None:
        raise PoisonRecord("record has no value")
    try:
        fields = orjson.loads(record.value)
        version = fields["orderversion"]
        if type(version) is not int or version < 1:
            raise ValueError(f"orderversion {version!r} is not a positive integer")
        header = RecordHeader(
            UUID(_text(fields["id"])),
            UUID(_text(fields["subject"])),
            version,
            _text(fields["type"]),
            _aware_time(fields["time"]),
            _aware_time(fields["recordedtime"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise PoisonRecord(f"unreadable event header: {err!r}") from err
    return ConsumedEvent(record, header)


def parse_cloudevent_header(record: ConsumerRecord[bytes, bytes]) -> ConsumedEvent:
    """A record of another topic than the order events, read as far as its id, type
    and time; raise PoisonRecord if impossible.

    Its header names no order (`NO_ORDER`, version 0): the consumer only needs the id
    (to skip a redelivery) and the handler the type and the record.
    """
    if record.value is None:
        raise PoisonRecord("record has no value")
    try:
        fields = orjson.loads(record.value)
        if not isinstance(fields, dict):
            raise TypeError("the record is not a JSON object")
        time = _aware_time(fields["time"])
        header = RecordHeader(
            UUID(_text(fields["id"])), NO_ORDER, 0, _text(fields["type"]), time, time
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise PoisonRecord(f"unreadable event header: {err!r}") from err
    return ConsumedEvent(record, header)


def _text(value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"{value!r} is not a string")
    return value


def _aware_time(value: object) -> datetime:
    moment = datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment


def _is_infrastructure_error(err: BaseException) -> bool:
    if isinstance(err, DBAPIError) and err.connection_invalidated:
        return True
    # Statements sent straight to the driver raise asyncpg's errors unwrapped.
    cause = err.orig if isinstance(err, DBAPIError) else err
    sqlstate = getattr(cause, "sqlstate", None)
    # A missing grant (say SELECT on the event store for the store check) is the
    # deployment's fault, not a record's: dead-lettering would throw away every
    # record until someone noticed. Wait for the fix as for an outage; lag shows it.
    if sqlstate == INSUFFICIENT_PRIVILEGE:
        return True
    if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
        return True
    return isinstance(err, INFRASTRUCTURE_ERRORS)


class TrackingConsumer:
    """Runs one consumer group member; `run()` is a background task."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        tracking: TrackingTables,
        topics: Sequence[str],
        handler: EventHandler,
        max_records: int = 2000,
        dead_letter_topic: str = DEAD_LETTER,
        group_id: str | None = None,
        check_against_store: bool = False,
        parse_payloads: bool = True,
        parser: RecordParser | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        # Without payloads, records are parsed as far as their header; a handler
        # that reads `.event` then parses (and may refuse) the record there. Only
        # behind the store check: the store vouches for what was not validated.
        # A `parser` of its own (records that are not order events) validates what
        # its handler needs; a PoisonRecord from it dead-letters the record.
        if not (parse_payloads or check_against_store):
            raise ValueError("parse_payloads=False needs check_against_store=True")
        if parser is not None and check_against_store:
            raise ValueError("the event store holds only order events")
        self._parse = parser or (parse_record if parse_payloads else parse_header)
        self._engine = engine
        self._tracer = tracer
        self._check_against_store = check_against_store
        self._consumer = consumer
        self._producer = producer
        self._tracking = tracking
        processed = tracking.processed_event
        # The per-batch statements go to the driver: SQLAlchemy's handling of a
        # 2,000-element array parameter cost more CPU than PostgreSQL's work.
        self._mark_processed = (
            f"INSERT INTO {processed.schema}.{processed.name} (event_id) "
            "SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id"
        )
        offsets = tracking.consumer_offset
        # One statement with array parameters whatever the partitions: building an
        # INSERT .. VALUES per batch cost more than running it.
        self._upsert_offsets = (
            f"INSERT INTO {offsets.schema}.{offsets.name} "  # noqa: S608 - our table
            '(group_id, topic, partition, "offset") '
            "SELECT $1, t, p, o FROM unnest($2::text[], $3::integer[], $4::bigint[]) "
            "AS r(t, p, o) ON CONFLICT (group_id, topic, partition) "
            'DO UPDATE SET "offset" = EXCLUDED."offset"'
        )
        self._topics = list(topics)
        self._handler = handler
        self._max_records = max_records
        self._dead_letter_topic = dead_letter_topic
        # The logical group its offsets are stored under (the broker's may be prefixed).
        self._group: str = group_id or consumer._group_id
        # The offsets this member last stored or read, per assigned partition: a
        # stored offset below it means someone rewound the position under us.
        self._known_offsets: dict[TopicPartition, int] = {}
        self.applied_total = 0
        # The record time (producer's clock) of the last record applied per partition:
        # how old the applied state is, for /metrics and /readyz.
        self.last_applied_record_time: dict[TopicPartition, float] = {}
        self.dead_lettered_total = 0
        self.rejected_total = 0
        self.duplicates_total = 0

    async def run(self) -> None:
        """Consume until cancelled; back off and resume from stored offsets on outages."""
        self._consumer.subscribe(self._topics, listener=_SeekToStored(self))
        while True:
            batch = await self._consumer.getmany(
                timeout_ms=500, max_records=self._max_records
            )
            records = [r for recs in batch.values() for r in recs]
            try:
                if records:
                    await self._apply(records)
                else:
                    await self._notice_rewinds()
            except asyncio.CancelledError:
                raise
            except PositionRewound as rewound:
                logger.info("%s; reading again from there", rewound)
                await self.seek_to_stored(rewound.partitions)
            except Exception as err:
                logger.warning("database unavailable (%s); will re-read the batch", err)
                await self._recover(list(batch))

    async def _apply(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        try:
            await self._apply_batch(records)
        except PositionRewound:
            raise
        except Exception as err:
            if _is_infrastructure_error(err):
                raise
            logger.info("batch failed (%s); isolating the bad record", err)
            await self._apply_one_by_one(records)

    async def _recover(self, partitions: Sequence[TopicPartition]) -> None:
        """Wait for the database, then rewind to what it says was applied."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.seek_to_stored(partitions)
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning("still cannot read stored offsets: %s", err)

    async def stored_offsets(
        self, conn: AsyncConnection, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The last applied offset per partition (absent: nothing applied yet)."""
        table = self._tracking.consumer_offset
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if not keys:
            return {}
        rows = await conn.execute(
            select(table.c.topic, table.c.partition, table.c.offset)
            .where(table.c.group_id == self._group)
            .where(tuple_(table.c.topic, table.c.partition).in_(keys))
            # Serialises with another member briefly holding the same partition
            # during a rebalance: only one of them applies a given offset.
            .with_for_update()
        )
        return {TopicPartition(r.topic, r.partition): r.offset for r in rows}

    async def seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        """Position the consumer right after what the database says was applied."""
        async with self._engine.connect() as conn:
            offsets = await self.stored_offsets(conn, partitions)
        for tp in partitions:
            if tp in offsets:
                self._consumer.seek(tp, offsets[tp] + 1)
                self._known_offsets[tp] = offsets[tp]
            else:
                await self._consumer.seek_to_beginning(tp)
                self._known_offsets.pop(tp, None)

    async def _notice_rewinds(self) -> None:
        """While idle: raise PositionRewound if the stored offsets went back."""
        if not self._known_offsets:
            return
        watched = list(self._known_offsets)
        async with self._engine.connect() as conn:
            stored = await self.stored_offsets(conn, watched)
        self._raise_if_rewound(stored, watched)

    def _raise_if_rewound(
        self, stored: dict[TopicPartition, int], partitions: Iterable[TopicPartition]
    ) -> None:
        rewound = [
            tp
            for tp in partitions
            if tp in self._known_offsets
            and stored.get(tp, -1) < self._known_offsets[tp]
        ]
        if rewound:
            raise PositionRewound(rewound)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions another member may now advance: no longer ours to watch."""
        for tp in partitions:
            self._known_offsets.pop(tp, None)

    async def _apply_batch(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        spans: list[Span] = []
        try:
            async with self._engine.begin() as conn:
                fresh = await self._unapplied(conn, records)
                events = [self._parse(r) for r in fresh]
                rejected: list[str] = []
                if self._check_against_store:
                    events, rejected = await self._reject_untrusted(conn, events)
                new = await self._first_seen(conn, events)
                if new:
                    if self._tracer is not None:
                        spans = self._start_apply_spans(self._tracer, new)
                    await self._handler.handle(new, conn)
                stored = await self._store_offsets(conn, fresh)
        except BaseException as err:
            end_spans(spans, err)
            raise
        if spans:
            end_spans(spans)  # applied means committed
        self._known_offsets.update(stored)
        for reason in rejected:
            RECORDS_REJECTED.labels(self._group, reason.split(":")[0]).inc()
        self.rejected_total += len(rejected)
        self.dead_lettered_total += len(rejected)
        self.applied_total += len(new)
        self.duplicates_total += len(events) - len(new)
        for record in fresh:
            self.last_applied_record_time[
                TopicPartition(record.topic, record.partition)
            ] = record.timestamp / 1000

    def _start_apply_spans(
        self, tracer: Tracer, events: Sequence[ConsumedEvent]
    ) -> list[Span]:
        """One span per traced event, the child of its record's trace context.

        The batch is applied in one transaction, so each span lasts the batch's
        apply and commit. Events without a trace context get none.
        """
        spans: list[Span] = []
        for consumed in events:
            record = consumed.record
            parent = parent_context(_record_traceparent(record))
            if parent is None:
                continue
            header = consumed.header
            consumed.span = span = tracer.start_span(
                f"process {record.topic}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    **kafka_attributes(
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                    ),
                    "messaging.operation.type": "process",
                    "messaging.consumer.group.name": self._group,
                    "messaging.batch.message_count": len(events),
                    "cloudevents.event_id": str(header.event_id),
                    "cloudevents.event_type": header.type,
                    "servicetrail.order_id": str(header.order_id),
                    "servicetrail.order_version": header.version,
                },
            )
            spans.append(span)
        return spans

    async def _reject_untrusted(
        self, conn: AsyncConnection, events: Sequence[ConsumedEvent]
    ) -> tuple[list[ConsumedEvent], list[str]]:
        """Keep the events the store holds as they are; dead-letter the rest.

        Returns the kept events and the reasons of the rejected. Dead-lettered
        before the batch commits, so at least once: a batch that fails afterwards
        sends its rejects again when it is read again.
        """
        matches = await match_stored(
            await driver_of(conn),
            [(e.header.event_id, _value(e.record)) for e in events],
        )
        genuine: list[ConsumedEvent] = []
        rejects: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for consumed, stored in zip(events, matches, strict=True):
            reason = rejection(
                order_id=consumed.header.order_id,
                version=consumed.header.version,
                stored=stored,
            )
            if reason is None:
                assert stored is not None  # no reason: the store holds it so
                genuine.append(consumed.confirmed(stored.canonical))
            else:
                rejects.append((consumed.record, reason))
        await asyncio.gather(
            *(
                self._send_to_dead_letter(
                    record,
                    error_type=UNTRUSTED_RECORD,
                    message=reason,
                    extra=[("rejected.reason", reason.encode())],
                )
                for record, reason in rejects
            )
        )
        for record, reason in rejects:
            logger.warning(
                "record %s/%s@%s not applied and dead-lettered: %s",
                record.topic,
                record.partition,
                record.offset,
                reason,
            )
        return genuine, [reason for _, reason in rejects]

    async def _apply_one_by_one(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        for record in records:
            last_error: BaseException | None = None
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    await self._apply_batch([record])
                    last_error = None
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    if _is_infrastructure_error(err):
                        raise
                    last_error = err
            if last_error is not None:
                await self._dead_letter(record, last_error)

    async def _unapplied(
        self, conn: AsyncConnection, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        partitions = {TopicPartition(r.topic, r.partition) for r in records}
        stored = await self.stored_offsets(conn, partitions)
        self._raise_if_rewound(stored, partitions)
        return [
            r
            for r in records
            if r.offset > stored.get(TopicPartition(r.topic, r.partition), -1)
        ]

    async def _first_seen(
        self, conn: AsyncConnection, events: Sequence[ConsumedEvent]
    ) -> list[ConsumedEvent]:
        if not events:
            return []
        # One array parameter, not a VALUES row per event: compiling a 2,000-row
        # statement cost ~29 ms of CPU per batch, as much as the ledger's hashing.
        driver = await driver_of(conn)
        inserted = await driver.fetch(
            self._mark_processed, [e.header.event_id for e in events]
        )
        new_ids = {row[0] for row in inserted}
        first: list[ConsumedEvent] = []
        for event in events:
            # The same id twice in one batch: only its first occurrence is new.
            if event.header.event_id in new_ids:
                new_ids.discard(event.header.event_id)
                first.append(event)
        return first

    async def _store_offsets(
        self, conn: AsyncConnection, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> dict[TopicPartition, int]:
        latest: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            latest[tp] = max(r.offset, latest.get(tp, -1))
        if not latest:
            return latest
        driver = await driver_of(conn)
        await driver.execute(
            self._upsert_offsets,
            self._group,
            [tp.topic for tp in latest],
            [tp.partition for tp in latest],
            list(latest.values()),
        )
        return latest

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: BaseException
    ) -> None:
        await self._send_to_dead_letter(
            record, error_type=type(error).__name__, message=str(error)
        )
        async with self._engine.begin() as conn:
            stored = await self._store_offsets(conn, [record])
        self._known_offsets.update(stored)
        self.dead_lettered_total += 1
        logger.warning(
            "record %s/%s@%s dead-lettered: %s",
            record.topic,
            record.partition,
            record.offset,
            error,
        )

    async def _send_to_dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        *,
        error_type: str,
        message: str,
        extra: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        headers: list[tuple[str, bytes]] = [
            *record.headers,
            ("error.type", error_type.encode()),
            ("error.message", message[:4000].encode()),
            *extra,
            ("original.topic", record.topic.encode()),
            ("original.partition", str(record.partition).encode()),
            ("original.offset", str(record.offset).encode()),
            ("consumer.group", self._group.encode()),
        ]
        await self._producer.send_and_wait(
            self._dead_letter_topic, value=record.value, key=record.key, headers=headers
        )


def _record_traceparent(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The record's `traceparent` header, else the envelope's (a relay that was not
    tracing sent none)."""
    traceparent = header_traceparent(record.headers)
    if traceparent is None:
        try:
            fields = orjson.loads(_value(record))
        except orjson.JSONDecodeError:
            return None
        value = fields.get(TRACEPARENT) if isinstance(fields, dict) else None
        traceparent = value if isinstance(value, str) else None
    return traceparent


def _value(record: ConsumerRecord[bytes, bytes]) -> bytes:
    value: bytes | None = record.value
    assert value is not None, "parse_record refused value-less records"
    return value


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, owner: TrackingConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to flush: every applied batch is already committed with its offsets."""
        self._owner.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._owner.seek_to_stored(list(assigned))
