"""The consumer base: offsets with the effect, duplicates ignored, poison dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ledger.consumer import LedgerAppender
from services.ledger.signing import TreeSigner
from services.ledger.store import ledger_entry, tracking
from shared.domain.lifecycle import OrderEvent
from shared.events.topics import DEAD_LETTER, LEDGER_GROUP, ORDER_EVENTS
from shared.kafka.consumer import ConsumedEvent, TrackingConsumer
from shared.settings import CommonSettings
from tests.builders import happy_path_history
from tests.integration.kafka_io import consuming, publish, read_topic, record_value
from tests.integration.store_io import store_events

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def ledger_consumer(
    engine: AsyncEngine, settings: CommonSettings, signing_key: Path
) -> AsyncIterator[TrackingConsumer]:
    handler = LedgerAppender(TreeSigner.load_or_create(signing_key))
    async with consuming(engine, settings, tracking=tracking, handler=handler) as c:
        yield c


async def publish_between(
    settings: CommonSettings,
    first: OrderEvent,
    last: OrderEvent,
    values: list[bytes],
) -> None:
    """`first`'s record, then `values`, then `last`'s, all keyed by `first`'s order."""
    key = str(first.order_id)
    await publish(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix + ORDER_EVENTS,
        [
            (key, record_value(first)),
            *((key, value) for value in values),
            (key, record_value(last)),
        ],
    )


async def ledger_size(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(select(func.count()).select_from(ledger_entry)) or 0
        )


async def wait_for_ledger_size(
    engine: AsyncEngine, size: int, timeout: float = 20
) -> None:
    async with asyncio.timeout(timeout):
        while await ledger_size(engine) < size:
            await asyncio.sleep(0.05)


async def test_a_record_delivered_twice_is_applied_once(
    engine: AsyncEngine, settings: CommonSettings, tmp_path: Path
) -> None:
    history = happy_path_history()
    values = [(str(e.order_id), record_value(e)) for e in history]
    topic = settings.kafka_topic_prefix + ORDER_EVENTS
    await publish(settings.kafka_bootstrap_servers, topic, values + values)
    async with ledger_consumer(engine, settings, tmp_path / "key.pem") as consumer:
        await wait_for_ledger_size(engine, len(history))
        async with asyncio.timeout(10):
            while consumer.applied_total + consumer.duplicates_total < 2 * len(history):
                await asyncio.sleep(0.05)
    assert await ledger_size(engine) == len(history)
    assert consumer.duplicates_total == len(history)
    async with engine.connect() as conn:
        offsets = (
            await conn.execute(select(tracking.consumer_offset.c.offset))
        ).scalars()
        assert sum(o + 1 for o in offsets) == 2 * len(history)


async def test_lost_offsets_replay_the_topic_without_changing_the_ledger(
    engine: AsyncEngine, settings: CommonSettings, tmp_path: Path
) -> None:
    history = happy_path_history()
    topic = settings.kafka_topic_prefix + ORDER_EVENTS
    await publish(
        settings.kafka_bootstrap_servers,
        topic,
        [(str(e.order_id), record_value(e)) for e in history],
    )
    async with ledger_consumer(engine, settings, tmp_path / "key.pem"):
        await wait_for_ledger_size(engine, len(history))
    async with engine.connect() as conn:
        before = (await conn.execute(select(ledger_entry).order_by("position"))).all()
    async with engine.begin() as conn:
        await conn.execute(delete(tracking.consumer_offset))
    async with ledger_consumer(engine, settings, tmp_path / "key.pem") as replay:
        async with asyncio.timeout(15):
            while replay.duplicates_total < len(history):
                await asyncio.sleep(0.05)
    async with engine.connect() as conn:
        after = (await conn.execute(select(ledger_entry).order_by("position"))).all()
    assert after == before


async def test_a_poison_record_is_dead_lettered_and_the_consumer_goes_on(
    engine: AsyncEngine, settings: CommonSettings, tmp_path: Path
) -> None:
    first, second = happy_path_history()[:2]
    topic = settings.kafka_topic_prefix + ORDER_EVENTS
    key = str(first.order_id)
    await publish_between(
        settings, first, second, [b'{"specversion": "1.0", "not": "an order event"']
    )
    async with ledger_consumer(engine, settings, tmp_path / "key.pem") as consumer:
        await wait_for_ledger_size(engine, 2)
    assert consumer.dead_lettered_total == 1
    dead = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix + DEAD_LETTER,
        expected=1,
    )
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["error.type"] == b"PoisonRecord"
    assert headers["original.topic"] == topic.encode()
    assert headers["original.offset"] == b"1"
    assert headers["consumer.group"] == LEDGER_GROUP.encode()
    assert dead[0].key == key.encode()


async def test_the_ledger_reads_headers_only_and_the_store_check_guards_the_rest(
    engine: AsyncEngine, settings: CommonSettings, tmp_path: Path
) -> None:
    """As the ledger service runs: records parsed as far as their header, behind
    the store check. An unreadable header is poison; a readable header over a
    payload the store does not hold is untrusted; the stored events are appended
    with the canonical bytes the store check confirmed."""
    first, second = happy_path_history()[:2]
    await store_events(settings, [first, second])
    envelope = json.loads(record_value(second))
    envelope["data"] = {"not": "a payload of this type"}
    await publish_between(
        settings,
        first,
        second,
        [
            json.dumps({**envelope, "orderversion": True}).encode(),
            json.dumps(envelope).encode(),
        ],
    )
    handler = LedgerAppender(TreeSigner.load_or_create(tmp_path / "key.pem"))
    async with consuming(
        engine,
        settings,
        tracking=tracking,
        handler=handler,
        check_against_store=True,
        parse_payloads=False,
    ) as consumer:
        await wait_for_ledger_size(engine, 2)
    dead = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix + DEAD_LETTER,
        expected=2,
    )
    assert consumer.dead_lettered_total == 2
    assert [
        (dict(r.headers)["error.type"], dict(r.headers)["original.offset"])
        for r in dead
    ] == [(b"PoisonRecord", b"1"), (b"UntrustedRecord", b"2")]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(ledger_entry).order_by(ledger_entry.c.position))
        ).all()
    assert [(r.event_id, r.order_version, r.canonical) for r in rows] == [
        (first.event_id, 1, record_value(first)),
        (second.event_id, 2, record_value(second)),
    ]
    assert rows[1].event_type == envelope["type"]


class OutageOnce:
    """Records the event ids of each batch it handles; its `fail_at`th call fails
    as a lost database connection would, before doing anything."""

    def __init__(self, fail_at: int) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.handled: list[list[UUID]] = []

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("connection reset by peer (simulated)")
        self.handled.append([e.event.event_id for e in events])


async def test_an_outage_between_small_batches_loses_and_doubles_nothing(
    engine: AsyncEngine, settings: CommonSettings
) -> None:
    """Records fetched past a failed batch are read again from the stored offsets,
    on every partition: each event is applied once, each order in version order."""
    histories = [happy_path_history()[:3] for _ in range(6)]
    events = [event for history in histories for event in history]
    await publish(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix + ORDER_EVENTS,
        [(str(e.order_id), record_value(e)) for e in events],
    )
    handler = OutageOnce(fail_at=2)
    async with consuming(
        engine, settings, tracking=tracking, handler=handler, max_records=2
    ) as consumer:
        async with asyncio.timeout(30):
            while consumer.applied_total < len(events):
                await asyncio.sleep(0.05)
    handled = [event_id for batch in handler.handled for event_id in batch]
    assert sorted(handled) == sorted(e.event_id for e in events)  # each once
    assert handler.calls > len(handler.handled)  # the outage did happen
    # Per order, in version order.
    position = {event_id: i for i, event_id in enumerate(handled)}
    for history in histories:
        assert [position[e.event_id] for e in history] == sorted(
            position[e.event_id] for e in history
        )
