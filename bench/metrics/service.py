"""The real metrics service (`python -m services.metrics`) consuming from Kafka.

An embedded Tansu broker on a free port, the order-events topic under a fresh
prefix, and the service as its own process on the benchmark's database (already
loaded by the apply phase, as a production database would be). The records are
encoded as the outbox relay publishes them (`to_cloudevent` + `encode`, key = the
order id) and stored in the event store first, as the writers do: the consumer
checks each batch against it and applies only the records it holds. The service is
started and ready first, its RSS taken, then the whole backlog is produced at once;
the consumer's progress is the sum of the offsets it stored in
`metrics.consumer_offset` (in the same transaction as the facts).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import asyncpg
import psutil
from aiokafka import AIOKafkaProducer

from bench.event_store import store_envelopes
from bench.ingest.cluster import (
    CpuMeter,
    ManagedProcess,
    child_environment,
    plain_url,
    python_module,
    wait_for_http,
)
from bench.metrics.events import EventStream
from bench.metrics.figures import MB, ServiceFigures
from services.stack.broker import EmbeddedBroker, create_topics
from services.stack.servers import free_port
from shared.events.envelope import KAFKA_HEADERS, encode, to_cloudevent
from shared.events.topics import (
    DEAD_LETTER,
    DEFAULT_PARTITIONS,
    METRICS_GROUP,
    ORDER_EVENTS,
    QUALITY_ALERTS,
    SOURCE_INTAKE,
)

Say = Callable[[str], None]
LOOPBACK: Final = "127.0.0.1"
POLL_SECONDS: Final = 0.5
RSS_POINTS: Final = 10  # RSS samples kept along the backlog (plus start and peak)

Record = tuple[bytes, bytes]


def encoded(stream: EventStream) -> list[Record]:
    """The whole stream as the relay publishes it: (key, CloudEvent bytes)."""
    out: list[Record] = []
    while batch := stream.take(5000):
        out.extend(
            (str(e.order_id).encode(), encode(to_cloudevent(e, source=SOURCE_INTAKE)))
            for e in batch
        )
    return out


class ServiceRun:
    """Broker, topics, the service process; `stop()` ends all of them."""

    def __init__(self, *, home: Path, database_url: str) -> None:
        self.home = home
        self.database_url = database_url
        self.prefix = f"bench{secrets.token_hex(3)}."
        self.topic = self.prefix + ORDER_EVENTS
        self.broker = EmbeddedBroker(port=None, log_file=home / "broker.log")
        self.process: ManagedProcess | None = None
        self.log = home / "metrics-service.log"
        self.port = 0

    async def start(self) -> None:
        self.broker.start()
        await create_topics(
            self.broker.bootstrap_servers,
            {
                self.prefix + name: DEFAULT_PARTITIONS[name]
                for name in (ORDER_EVENTS, QUALITY_ALERTS, DEAD_LETTER)
            },
        )
        self.port = free_port(LOOPBACK)
        env = child_environment(
            DATABASE_URL=self.database_url,
            KAFKA_BOOTSTRAP_SERVERS=self.broker.bootstrap_servers,
            KAFKA_TOPIC_PREFIX=self.prefix,
            KAFKA_SESSION_TIMEOUT_MS="2000",
            KAFKA_HEARTBEAT_INTERVAL_MS="500",
            HOST=LOOPBACK,
            PORT=str(self.port),
            JWT_SECRET=secrets.token_urlsafe(48),
            LOG_LEVEL="info",
        )
        self.process = ManagedProcess(
            python_module("services.metrics"), log=self.log, env=env
        )
        self.process.start()
        await asyncio.to_thread(
            wait_for_http,
            f"http://{LOOPBACK}:{self.port}/readyz",
            timeout=90.0,
            process=self.process,
        )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def rss_mb(self) -> float:
        pid = self.pid
        if pid is None:
            return float("nan")
        try:
            return float(psutil.Process(pid).memory_info().rss) / MB
        except psutil.Error:
            return float("nan")

    def alive(self) -> bool:
        process = None if self.process is None else self.process.process
        return process is not None and process.poll() is None

    async def produce(self, records: list[Record]) -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.bootstrap_servers,
            acks="all",
            max_batch_size=1024 * 1024,
            linger_ms=5,
        )
        await producer.start()
        began = time.perf_counter()
        try:
            for key, value in records:
                await producer.send(
                    self.topic, value=value, key=key, headers=KAFKA_HEADERS
                )
            await producer.flush()
        finally:
            await producer.stop()
        return time.perf_counter() - began

    async def applied(self, conn: asyncpg.Connection[asyncpg.Record]) -> int:
        """Records the consumer has stored offsets for (all partitions)."""
        value = await conn.fetchval(
            'SELECT coalesce(sum("offset" + 1), 0) FROM metrics.consumer_offset '
            "WHERE group_id = $1 AND topic = $2",
            METRICS_GROUP,
            self.topic,
        )
        return int(value or 0)

    def log_excerpt(self, *needles: str, lines: int = 6) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        hits = [line[:400] for line in text if any(n in line for n in needles)]
        return "\n".join(hits[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        self.broker.stop()


async def service_phase(
    *,
    home: Path,
    database_url: str,
    events: int,
    window: int,
    technicians: int,
    days: float,
    seed: int,
    time_limit: float,
    stall_seconds: float,
    postmaster: int | None,
    say: Say,
) -> ServiceFigures:
    """The service consuming a backlog of `events` produced at once."""
    figures = ServiceFigures(events=events)
    say(f"  encoding {events:,} events (window {window:,} open orders) ...")
    records = encoded(
        EventStream(
            total=events,
            window=window,
            technicians=technicians,
            days=days,
            seed=seed,
        )
    )
    run = ServiceRun(home=home, database_url=database_url)
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        began = time.perf_counter()
        await store_envelopes(conn, (value for _, value in records))
        say(
            f"  stored {events:,} events in the event store in "
            f"{time.perf_counter() - began:.1f} s (the consumer applies only those)"
        )
        began = time.perf_counter()
        await run.start()
        say(
            f"  python -m services.metrics (pid {run.pid}) ready in "
            f"{time.perf_counter() - began:.1f} s; broker {run.broker.bootstrap_servers}"
        )
        await asyncio.sleep(2.0)  # the first live snapshot and alert evaluation
        figures.rss_start_mb = run.rss_mb()
        roots = {"metrics service": run.pid or 0}
        if postmaster is not None:
            roots["postgres"] = postmaster
        if run.broker.pid is not None:
            roots["broker"] = run.broker.pid
        meter = CpuMeter(roots)
        meter.start()
        started = time.perf_counter()
        figures.produced_seconds = await run.produce(records)
        del records
        say(
            f"  produced {events:,} records in {figures.produced_seconds:.1f} s; "
            f"RSS at start {figures.rss_start_mb:,.0f} MB"
        )
        await _follow(run, conn, figures, started, time_limit, stall_seconds, say)
        figures.cpu_percent = meter.stop()
        if figures.stalled:
            figures.log_excerpt = run.log_excerpt("Error", "error", "unavailable")
    except Exception as err:
        figures.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        figures.log_excerpt = run.log_excerpt("Error", "error", "Traceback")
        say(f"  [red]service phase failed: {figures.error}[/red]")
    finally:
        await conn.close()
        run.stop()
    return figures


async def _follow(
    run: ServiceRun,
    conn: asyncpg.Connection[asyncpg.Record],
    figures: ServiceFigures,
    started: float,
    time_limit: float,
    stall_seconds: float,
    say: Say,
) -> None:
    """Poll the stored offsets and the service's RSS until the backlog is applied,
    the time limit passes or nothing moves for `stall_seconds`."""
    first_progress: float | None = None
    last_progress = time.perf_counter()
    last = 0
    events = figures.events
    next_point = events / RSS_POINTS
    peak = figures.rss_start_mb
    while True:
        await asyncio.sleep(POLL_SECONDS)
        now = time.perf_counter()
        applied = await run.applied(conn)
        rss = run.rss_mb()
        peak = max(peak, rss)
        if applied > last:
            if first_progress is None:
                first_progress = now
            last_progress = now
            last = applied
        if applied >= next_point:
            figures.rss_points.append((applied, rss))
            say(
                f"    {applied:>9,} applied, {applied / (now - started):,.0f} events/s "
                f"since the backlog was produced; service RSS {rss:,.0f} MB"
            )
            while next_point <= applied:
                next_point += events / RSS_POINTS
        if applied >= events:
            break
        if not run.alive():
            figures.error = "the service exited"
            break
        if now - last_progress > stall_seconds:
            figures.stalled = True
            say(
                f"  [red]no progress for {stall_seconds:.0f} s at {applied:,} of "
                f"{events:,} events[/red]"
            )
            break
        if now - started > time_limit:
            figures.stopped_early = True
            say(f"  [yellow]time limit reached at {applied:,} events[/yellow]")
            break
    figures.applied = last
    figures.rss_peak_mb = peak
    end = last_progress
    figures.seconds_from_start = end - started
    figures.seconds = end - (first_progress or started)
    if not figures.rss_points or figures.rss_points[-1][0] != last:
        figures.rss_points.append((last, run.rss_mb()))
