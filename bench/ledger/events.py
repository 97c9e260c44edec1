"""A realistic, deterministic stream of order events for the ledger benchmark.

Valid histories are built once through the real domain (`tests.builders.Story`:
`decide` + `evolve`, the same as `happy_path_history()`) and encoded as intake
publishes them (`to_cloudevent` + `encode`, ~570-byte values). Each synthetic order
copies one of these templates with fresh order and event ids (references such as a
quote approval's `quote_event_id` follow the copy), so every record is a valid
CloudEvent that `parse_record` accepts, exactly as the ledger's Kafka consumer does.

Orders are interleaved as in production: a window of concurrently open orders, each
record advancing a random one of them; an order that reaches its last event makes
room for the next. A batch of 2,000 records therefore touches ~2,000 different
orders, almost all of which already have a chain head in the ledger.

One order (the "long order", 100 events by default) has its events spread evenly
over the whole stream, for the history-latency measurement.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from aiokafka.structs import ConsumerRecord

from shared.domain.lifecycle import OrderStatus
from shared.events.canonical import canonical_from_json
from shared.events.envelope import KAFKA_HEADERS, encode, to_cloudevent
from shared.events.topics import ORDER_EVENTS, SOURCE_INTAKE
from shared.kafka.consumer import ConsumedEvent, parse_header
from tests.builders import (
    Story,
    advance_to,
    make_complaint_filed,
    make_complaint_resolved,
    random_ref,
)

TEMPLATES: Final = 64
PARTITIONS: Final = 3


def order_history(length: int) -> Story:
    """A valid history of `length` events: the happy path (created .. completed,
    rated: what `happy_path_history()` builds), then complaints filed and resolved."""
    story = Story()
    advance_to(story, OrderStatus.COMPLETED)
    story.rate()
    while len(story.history) < length:
        complaint = random_ref("cmp")
        story.post(story.customer, make_complaint_filed(complaint))
        if len(story.history) < length:
            story.post(story.dispatcher, make_complaint_resolved(complaint))
    del story.history[length:]
    return story


@dataclass(frozen=True, slots=True)
class _Template:
    """One encoded history and the id strings to replace in a copy."""

    order_id: bytes
    values: tuple[bytes, ...]
    # Per event: the template event ids its value contains (its own id, references).
    ids_in: tuple[tuple[bytes, ...], ...]

    @classmethod
    def of(cls, story: Story) -> _Template:
        values = tuple(
            encode(to_cloudevent(e, source=SOURCE_INTAKE)) for e in story.history
        )
        event_ids = [str(e.event_id).encode() for e in story.history]
        return cls(
            order_id=str(story.order_id).encode(),
            values=values,
            ids_in=tuple(tuple(i for i in event_ids if i in value) for value in values),
        )

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class _OpenOrder:
    template: _Template
    order_id: bytes
    length: int
    new_ids: dict[bytes, bytes] = field(default_factory=dict)
    next: int = 0

    def emit(self, rng: random.Random) -> bytes:
        value = self.template.values[self.next].replace(
            self.template.order_id, self.order_id
        )
        for old in self.template.ids_in[self.next]:
            new = self.new_ids.get(old)
            if new is None:
                new = self.new_ids[old] = _uuid(rng)
            value = value.replace(old, new)
        self.next += 1
        return value

    @property
    def done(self) -> bool:
        return self.next >= self.length


def _uuid(rng: random.Random) -> bytes:
    return str(UUID(int=rng.getrandbits(128), version=4)).encode()


@dataclass(frozen=True, slots=True)
class Record:
    """A record as the relay publishes it: key = order id, value = CloudEvent."""

    key: bytes
    value: bytes


class EventStream:
    """`entries` records over `orders` orders, one of them `long_order_events` long."""

    def __init__(
        self,
        *,
        entries: int,
        orders: int,
        window: int,
        seed: int,
        long_order_events: int = 100,
    ) -> None:
        if orders < 2:
            raise ValueError("--orders must be at least 2")
        others = entries - long_order_events
        if others < orders - 1:
            raise ValueError(
                f"--entries {entries} is too small for {orders} orders plus "
                f"a {long_order_events}-event order"
            )
        self.entries = entries
        self._rng = random.Random(seed)
        self._base, self._extra = divmod(others, orders - 1)
        longest = self._base + (1 if self._extra else 0)
        self._templates = [
            _Template.of(order_history(longest)) for _ in range(TEMPLATES)
        ]
        long_story = order_history(long_order_events)
        self.long_order_id = long_story.order_id
        self._long = _OpenOrder(
            _Template.of(long_story),
            str(long_story.order_id).encode(),
            long_order_events,
        )
        # The long order's events at evenly spaced stream positions.
        self._long_at = [
            (2 * k + 1) * entries // (2 * long_order_events)
            for k in range(long_order_events)
        ]
        self._pending = orders - 1  # orders not opened yet
        self._opened = 0
        self._open: list[_OpenOrder] = []
        while self._pending and len(self._open) < window:
            self._open.append(self._new_order())
        self.emitted = 0

    @property
    def mean_value_bytes(self) -> float:
        values = [v for t in self._templates for v in t.values]
        return sum(map(len, values)) / len(values)

    def _new_order(self) -> _OpenOrder:
        length = self._base + (1 if self._opened < self._extra else 0)
        self._opened += 1
        self._pending -= 1
        return _OpenOrder(self._rng.choice(self._templates), _uuid(self._rng), length)

    def _next_value(self) -> bytes:
        if self._long_at and self._long_at[0] <= self.emitted:
            self._long_at.pop(0)
            return self._long.emit(self._rng)
        slot = self._rng.randrange(len(self._open))
        order = self._open[slot]
        value = order.emit(self._rng)
        if order.done:
            if self._pending:
                self._open[slot] = self._new_order()
            else:
                self._open[slot] = self._open[-1]
                self._open.pop()
        return value

    def take(self, count: int) -> list[Record]:
        """The next `count` records (fewer at the end of the stream)."""
        out: list[Record] = []
        while len(out) < count and self.emitted < self.entries:
            value = self._next_value()
            # The subject (order id) sits at a fixed place after "subject":".
            start = value.index(b'"subject":"') + 11
            out.append(Record(value[start : start + 36], value))
            self.emitted += 1
        return out

    def rest_of_long_order(self) -> list[Record]:
        """The long order's events not emitted yet (for a run cut short)."""
        out: list[Record] = []
        while not self._long.done:
            self._long_at.pop(0)
            out.append(Record(self._long.order_id, self._long.emit(self._rng)))
        self.emitted += len(out)
        return out


def consumed(records: Sequence[Record], first_offset: int) -> list[ConsumedEvent]:
    """What the ledger's Kafka consumer hands to the appender for these records:
    each parsed as far as its header, its canonical bytes confirmed by the store
    check (which `bench.ledger.store_check` measures)."""
    parsed = [
        parse_header(
            ConsumerRecord(
                topic=ORDER_EVENTS,
                partition=(first_offset + i) % PARTITIONS,
                offset=first_offset + i,
                timestamp=0,
                timestamp_type=0,
                key=r.key,
                value=r.value,
                checksum=None,
                serialized_key_size=len(r.key),
                serialized_value_size=len(r.value),
                headers=KAFKA_HEADERS,
            )
        )
        for i, r in enumerate(records)
    ]
    return [
        c.confirmed(canonical_from_json(r.value))
        for c, r in zip(parsed, records, strict=True)
    ]
