"""The relay phase: one backlog drained by the relay, by a bare producer, by the ledger.

Each stage runs alone, so each figure is that stage's own rate on this machine:
intake and dispatch (the two relays) and every consumer are stopped, `backlog`
events are stored with their outbox rows, then

1. raw drain: the rows read from PostgreSQL in id order and produced with a bare
   `AIOKafkaProducer` (the relay's producer settings) to a topic of its own, all
   sends pipelined, timed until the last ack: the ceiling for (2). Run again
   after (2); the baseline is the mean of the two;
2. relay: intake starts; its relay drains the outbox (timed from the first
   published row to the last, by polling the lowest unpublished id);
3. ledger: the ledger starts and consumes the relay's records (timed from its first
   appended entry to the last); then metrics and dispatch start again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.ingest.cluster import CpuMeter, connected, stack_processes
from bench.ingest.stats import RelayFigures
from services.stack import Stack
from services.stack.broker import create_topics
from shared.events.envelope import KAFKA_HEADERS, encode, format_time
from shared.events.topics import DEFAULT_PARTITIONS, ORDER_EVENTS

RAW_TOPIC: Final = "bench.raw-drain"
BATCH_SIZE: Final = 2000  # the relay's default batch
POLL_SECONDS: Final = 0.02
CONSUMERS: Final = ("ledger", "metrics", "dispatch")


async def insert_backlog(database_url: str, count: int) -> tuple[int, int]:
    """`count` new `created` events with their outbox rows, in one transaction.

    Copies of a real stored envelope (from the earlier phases), each with a fresh
    event and order id, encoded as intake encodes them. Returns the first and last
    new outbox id.
    """
    async with connected(database_url) as conn:
        template = await conn.fetchrow(
            "SELECT type, time, actor, envelope::text AS envelope "
            "FROM event_store.order_event WHERE version = 1 "
            "ORDER BY position DESC LIMIT 1"
        )
        if template is None:
            raise RuntimeError("no stored event to copy; run the intake phases first")
        envelope: dict[str, Any] = json.loads(template["envelope"])
        now = datetime.now(UTC)
        events: list[tuple[Any, ...]] = []
        outbox: list[tuple[Any, ...]] = []
        for _ in range(count):
            event_id, order_id = uuid.uuid4(), uuid.uuid4()
            value = encode(
                {
                    **envelope,
                    "id": str(event_id),
                    "subject": str(order_id),
                    "recordedtime": format_time(now),
                }
            )
            events.append(
                (
                    order_id,
                    1,
                    event_id,
                    template["type"],
                    template["time"],
                    now,
                    template["actor"],
                    b"\x00" * 32,
                    value.decode(),
                    hashlib.sha256(value).digest(),  # encode() wrote canonical bytes
                )
            )
            outbox.append((ORDER_EVENTS, str(order_id), value))
        async with conn.transaction():
            first = await conn.fetchval(
                "SELECT coalesce(max(id), 0) + 1 FROM event_store.outbox_message"
            )
            await conn.copy_records_to_table(
                "order_event",
                schema_name="event_store",
                columns=[
                    "order_id",
                    "version",
                    "event_id",
                    "type",
                    "time",
                    "recorded_at",
                    "actor",
                    "request_digest",
                    "envelope",
                    "canonical_digest",
                ],
                records=events,
            )
            await conn.copy_records_to_table(
                "outbox_message",
                schema_name="event_store",
                columns=["topic", "key", "value"],
                records=outbox,
            )
            last = await conn.fetchval("SELECT max(id) FROM event_store.outbox_message")
        await conn.execute("ANALYZE event_store.outbox_message")
    return int(first), int(last)


async def progress_rate(
    database_url: str,
    query: str,
    *,
    total: int,
    limit_seconds: float,
    on_first_progress: Callable[[], None] = lambda: None,
) -> float:
    """Rows/s of a stage, from its first progress to `total` done.

    `query` returns how many rows the stage has done so far (a cheap index read:
    polled every 20 ms, a count would compete with the stage for the CPU).
    """
    async with connected(database_url) as conn:
        deadline = time.monotonic() + limit_seconds
        first: tuple[float, int] | None = None
        while time.monotonic() < deadline:
            done = int(await conn.fetchval(query))
            now = time.monotonic()
            if done > 0 and first is None:
                first = (now, done)
                on_first_progress()
            if done >= total:
                assert first is not None
                seconds = now - first[0]
                return (total - first[1]) / seconds if seconds > 0 else float("inf")
            await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"{total} rows not done in {limit_seconds:.0f} s")


def raw_drain(
    database_url: str, bootstrap: str, first_id: int, last_id: int
) -> tuple[float, float]:
    """(rows/s, CPU us/row): the outbox rows first_id..last_id, a bare producer.

    Run before and after the relay (the mean is the baseline): on a shared
    machine a neighbour's load changes within a phase.
    """
    cpu = time.process_time()
    rate = asyncio.run(_raw_drain(database_url, bootstrap, first_id, last_id))
    return rate, (time.process_time() - cpu) * 1e6 / (last_id - first_id + 1)


async def _raw_drain(
    database_url: str, bootstrap: str, first_id: int, last_id: int
) -> float:
    await create_topics(bootstrap, {RAW_TOPIC: DEFAULT_PARTITIONS[ORDER_EVENTS]})
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=1024 * 1024,
        linger_ms=2,
    )
    await producer.start()
    try:
        async with connected(database_url) as conn:
            return await _produce_rows(producer, conn, first_id, last_id)
    finally:
        await producer.stop()


async def _produce_rows(
    producer: AIOKafkaProducer, conn: asyncpg.Connection, first_id: int, last_id: int
) -> float:
    await producer.partitions_for(RAW_TOPIC)
    began = time.perf_counter()
    pending: list[Awaitable[object]] = []
    after = first_id - 1
    while after < last_id:
        rows = await conn.fetch(
            "SELECT id, key, value FROM event_store.outbox_message "
            "WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            after,
            last_id,
            BATCH_SIZE,
        )
        for row in rows:
            pending.append(
                await producer.send(
                    RAW_TOPIC,
                    value=row["value"],
                    key=row["key"].encode(),
                    headers=KAFKA_HEADERS,
                )
            )
        after = rows[-1]["id"]
    await asyncio.gather(*pending)
    return len(pending) / (time.perf_counter() - began)


async def _scalar(database_url: str, query: str) -> int:
    async with connected(database_url) as conn:
        return int(await conn.fetchval(query) or 0)


def relay_catch_up(
    stack: Stack, *, backlog: int, timeout: float, say: Callable[[str], None]
) -> RelayFigures:
    """The three stages over one backlog (the stack must be idle)."""
    assert stack.database_url is not None
    assert stack.kafka_bootstrap is not None
    url = stack.database_url
    say("  stopping intake, dispatch (the relays), ledger and metrics")
    for name in ("intake", *CONSUMERS):
        stack.stop_service(name)
    first_id, last_id = asyncio.run(insert_backlog(url, backlog))
    say(f"  stored {backlog:,} events with their outbox rows")
    raw: list[tuple[float, float]] = []
    raw.append(raw_drain(url, stack.kafka_bootstrap, first_id, last_id))
    stack.start_service("intake")
    meter = CpuMeter(stack_processes(stack))
    relay = asyncio.run(
        progress_rate(
            url,
            # Published in id order, over contiguous ids: the lowest unpublished id
            # tells how many are done (one entry of the partial index).
            "SELECT coalesce(min(id), "
            f"{last_id + 1}) - {first_id} FROM event_store.outbox_message "
            "WHERE published_at IS NULL",
            total=last_id - first_id + 1,
            limit_seconds=timeout,
            on_first_progress=meter.start,
        )
    )
    cpu = meter.stop()
    raw.append(raw_drain(url, stack.kafka_bootstrap, first_id, last_id))
    say(
        f"  relay {relay:,.0f} events/s, intake CPU "
        f"{10_000 * cpu['intake'] / relay:.0f} us/event; raw drain before and "
        f"after: {raw[0][0]:,.0f} and {raw[1][0]:,.0f} events/s, "
        f"{raw[0][1]:.0f} and {raw[1][1]:.0f} us/event"
    )
    entries = "SELECT coalesce(max(position), 0) {} FROM ledger.ledger_entry"
    before = asyncio.run(_scalar(url, entries.format("")))
    stack.start_service("ledger")
    ledger_meter = CpuMeter(stack_processes(stack))
    ledger = asyncio.run(
        progress_rate(
            url,
            entries.format(f"- {before}"),
            total=backlog,
            limit_seconds=timeout,
            on_first_progress=ledger_meter.start,
        )
    )
    ledger_cpu = ledger_meter.stop()
    # CPU per event is steadier than the rate on a machine shared with neighbours.
    say(
        f"  ledger: {ledger:,.0f} events/s; CPU per event: "
        + ", ".join(
            f"{name} {10_000 * ledger_cpu.get(name, 0.0) / ledger:.0f} us"
            for name in ("ledger", "postgres", "broker")
        )
    )
    for name in CONSUMERS[1:]:
        stack.start_service(name)
    stack.wait_until_healthy()
    return RelayFigures(
        backlog=backlog,
        events_per_second=relay,
        raw_drain_events_per_second=(raw[0][0] + raw[1][0]) / 2,
        ledger_events_per_second=ledger,
        cpu_percent=cpu,
    )
