"""The benchmark phases: each drives load or SQL and returns its figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench.ingest.cluster import (
    LOOPBACK,
    CpuMeter,
    ManagedProcess,
    child_environment,
    plain_url,
    python_module,
    stack_processes,
)
from bench.ingest.loadgen import ID_MARKER, LoadConfig, LoadResult
from bench.ingest.stats import (
    Distribution,
    LagFigures,
    RelayFigures,
    ThroughputFigures,
)
from services.stack import Stack, jwt_secret
from shared.domain.actors import Role
from shared.events.envelope import encode, format_time
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.http_bodies import new_order_body

Say = Callable[[str], None]

CUSTOMERS: Final = 64
ORDERS_PATH: Final = "/v1/orders"
_UNPUBLISHED: Final = (
    "SELECT count(*) FROM event_store.outbox_message WHERE published_at IS NULL"
)
_LOWEST_UNPUBLISHED: Final = (
    "SELECT min(id) FROM event_store.outbox_message WHERE published_at IS NULL"
)
_LEDGER_BEHIND: Final = (
    "SELECT (SELECT count(*) FROM event_store.order_event)"
    " - (SELECT count(*) FROM ledger.ledger_entry)"
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a load generator sends its orders."""

    name: str
    host: str
    port: int


def customer_tokens(home: Path, count: int = CUSTOMERS) -> list[str]:
    """Bearer tokens of `count` distinct customers, valid for the stack in `home`."""
    settings = CommonSettings(jwt_secret=jwt_secret(home))
    return [
        issue_token(settings, role=Role.CUSTOMER, subject=f"bench-customer-{i}")
        for i in range(count)
    ]


def body_template() -> str:
    """A realistic order body with the id left as `ID_MARKER` for the generator."""
    return json.dumps(new_order_body(id=ID_MARKER), ensure_ascii=False)


def run_load(
    config: LoadConfig,
    workdir: Path,
    *,
    on_started: Callable[[ManagedProcess], None] | None = None,
) -> LoadResult:
    """Run the load generator as its own process and return what it measured."""
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = uuid.uuid4().hex[:8]
    config_path = workdir / f"load-{stamp}.json"
    result_path = workdir / f"result-{stamp}.json"
    config_path.write_text(config.to_json())
    process = ManagedProcess(
        python_module("bench.ingest.loadgen", str(config_path), str(result_path)),
        log=workdir / "loadgen.log",
        env=child_environment(),
    )
    timeout = config.warmup + config.duration + 2 * config.request_timeout + 30.0
    try:
        process.start()
        if on_started is not None:
            on_started(process)
        code = process.wait(timeout)
    finally:
        process.stop()
    if code != 0 or not result_path.exists():
        raise RuntimeError(
            f"the load generator failed (exit {code}); see {workdir / 'loadgen.log'}"
        )
    return LoadResult.from_json(result_path.read_text())


def throughput(
    target: Target,
    *,
    tokens: Sequence[str],
    concurrency: int,
    duration: float,
    warmup: float,
    workdir: Path,
    cpu_roots: dict[str, int],
    profile_to: Path | None = None,
    profile_pid: int | None = None,
) -> ThroughputFigures:
    """Closed-loop load on one target; CPU of `cpu_roots` measured inside the window."""
    config = LoadConfig(
        host=target.host,
        port=target.port,
        path=ORDERS_PATH,
        body_template=body_template(),
        tokens=list(tokens),
        mode="closed",
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
    )
    cpu: dict[str, float] = {}
    profiler: ManagedProcess | None = None

    def measure(process: ManagedProcess) -> None:
        nonlocal profiler
        assert process.pid is not None
        meter = CpuMeter({**cpu_roots, "load generator": process.pid})
        time.sleep(warmup + 0.5)
        if profile_to is not None and profile_pid is not None:
            profiler = start_profiler(profile_pid, profile_to, max(duration - 1.5, 1))
        meter.start()
        time.sleep(max(duration - 1.0, 0.5))
        cpu.update(meter.stop())

    try:
        result = run_load(config, workdir, on_started=measure)
    finally:
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)  # py-spy writes its output when its time is up
            profiler.stop()
    return ThroughputFigures(
        name=target.name,
        requests_per_second=result.ok / result.measured_seconds,
        latency_ms=Distribution.of(result.latencies_ms),
        errors=result.errors,
        client_cpu_percent=100.0
        * result.client_cpu_seconds
        / (result.measured_seconds + warmup),
        server_cpu_percent=cpu,
    )


def start_profiler(pid: int, output: Path, seconds: float) -> ManagedProcess | None:
    """py-spy in collapsed-stack format, if installed (not pausing the target)."""
    output.unlink(missing_ok=True)
    binary = shutil.which("py-spy")
    if binary is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    profiler = ManagedProcess(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--nonblocking",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        log=output.with_suffix(".log"),
        env=child_environment(),
    )
    profiler.start()
    return profiler


async def _wait_for(
    database_url: str,
    query: str,
    args: Sequence[Any],
    done: Callable[[int], bool],
    *,
    limit_seconds: float,
    interval: float = 0.1,
) -> tuple[bool, int]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        deadline = time.monotonic() + limit_seconds
        while True:
            value = int(await conn.fetchval(query, *args))
            if done(value):
                return True, value
            if time.monotonic() > deadline:
                return False, value
            await asyncio.sleep(interval)
    finally:
        await conn.close()


def quiesce(database_url: str, *, timeout: float, say: Say) -> None:
    """Wait until the outbox is drained and the ledger holds every stored event."""
    query = f"SELECT ({_UNPUBLISHED}) + ({_LEDGER_BEHIND})"
    began = time.monotonic()
    ok, left = asyncio.run(
        _wait_for(
            database_url,
            query,
            [],
            lambda v: v <= 0,
            limit_seconds=timeout,
            interval=0.5,
        )
    )
    if ok:
        say(f"  system idle after {time.monotonic() - began:.1f} s")
    else:
        say(f"  [yellow]still {left} events in flight after {timeout:.0f} s[/yellow]")


def lag(
    target: Target,
    *,
    database_url: str,
    tokens: Sequence[str],
    rate: float,
    duration: float,
    concurrency: int,
    workdir: Path,
    ledger_timeout: float,
    say: Say,
) -> LagFigures:
    """Open loop at `rate`; then read each acknowledged order's ledger entry."""
    config = LoadConfig(
        host=target.host,
        port=target.port,
        path=ORDERS_PATH,
        body_template=body_template(),
        tokens=list(tokens),
        mode="open",
        concurrency=concurrency,
        duration=duration,
        warmup=1.0,
        rate=rate,
    )
    result = run_load(config, workdir)
    ids = [event_id for event_id, _ in result.acks]
    acked_at = dict(result.acks)
    say(f"  {len(ids)} orders acknowledged; waiting for the ledger")
    began = time.monotonic()
    ok, present = asyncio.run(
        _wait_for(
            database_url,
            "SELECT count(*) FROM ledger.ledger_entry WHERE event_id = ANY($1::uuid[])",
            [ids],
            lambda n: n >= len(ids),
            limit_seconds=ledger_timeout,
            interval=0.2,
        )
    )
    say(
        f"  ledger has {present}/{len(ids)} after {time.monotonic() - began:.1f} s"
        + ("" if ok else " [yellow](gave up waiting)[/yellow]")
    )
    rows = asyncio.run(_ledger_rows(database_url, ids))
    commit_lag = [row[1] for row in rows]
    ack_lag = [(row[2] - acked_at[row[0]]) * 1000.0 for row in rows]
    return LagFigures(
        target_rate=rate,
        achieved_rate=result.ok / result.measured_seconds,
        post_latency_ms=Distribution.of(result.latencies_ms),
        errors=result.errors,
        late_starts=result.late_starts,
        commit_to_ledger_ms=Distribution.of(commit_lag),
        ack_to_ledger_ms=Distribution.of(ack_lag),
        missing=len(ids) - len(rows),
    )


async def _ledger_rows(
    database_url: str, ids: Sequence[str]
) -> list[tuple[str, float, float]]:
    """(event id, appended_at - recorded_at in ms, appended_at epoch) per entry."""
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        rows = await conn.fetch(
            """
            SELECT l.event_id::text AS event_id,
                   extract(epoch FROM l.appended_at - e.recorded_at) * 1000.0 AS lag_ms,
                   extract(epoch FROM l.appended_at) AS appended
            FROM ledger.ledger_entry AS l
            JOIN event_store.order_event AS e USING (event_id)
            WHERE l.event_id = ANY($1::uuid[])
            """,
            list(ids),
        )
    finally:
        await conn.close()
    return [(r["event_id"], float(r["lag_ms"]), float(r["appended"])) for r in rows]


async def insert_backlog(database_url: str, count: int) -> tuple[int, int, float]:
    """`count` new `created` events, each with its outbox row, in one transaction.

    Copies a real stored envelope (from the earlier phases) and gives every copy a
    fresh event id and order id; the outbox value is encoded exactly as intake
    encodes it. Returns (first and last new outbox id, mean value size in bytes).
    """
    conn = await asyncpg.connect(plain_url(database_url))
    try:
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
        size = 0
        for _ in range(count):
            event_id, order_id = uuid.uuid4(), uuid.uuid4()
            copy = {
                **envelope,
                "id": str(event_id),
                "subject": str(order_id),
                "recordedtime": format_time(now),
            }
            value = encode(copy)
            size += len(value)
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
                )
            )
            outbox.append(("servicetrail.order-events", str(order_id), value))
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
        return int(first), int(last), size / max(count, 1)
    finally:
        await conn.close()


async def _drain(
    database_url: str,
    first_id: int,
    last_id: int,
    limit_seconds: float,
    on_first_progress: Callable[[], None],
) -> tuple[float | None, int, float | None]:
    """Poll the lowest unpublished id: (first progress, rows left then, zero).

    The relay publishes in id order and the backlog ids are contiguous, so
    `last_id - min(id) + 1` is the rows left; the lowest entry of the partial index
    is far cheaper to read every 20 ms than a count (which would compete with the
    relay for the CPU).
    """
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        first: float | None = None
        at_first = last_id - first_id + 1
        deadline = time.monotonic() + limit_seconds
        while time.monotonic() < deadline:
            lowest = await conn.fetchval(_LOWEST_UNPUBLISHED)
            now = time.monotonic()
            if lowest is None:
                if first is None:
                    first = now
                    on_first_progress()
                return first, at_first, now
            if first is None and lowest > first_id:
                first, at_first = now, last_id - int(lowest) + 1
                on_first_progress()
            await asyncio.sleep(0.02)
        return first, at_first, None
    finally:
        await conn.close()


async def _published_span(database_url: str, first_id: int) -> float:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        span = await conn.fetchval(
            "SELECT extract(epoch FROM max(published_at) - min(published_at)) "
            "FROM event_store.outbox_message WHERE id >= $1",
            first_id,
        )
    finally:
        await conn.close()
    return float(span or 0.0)


def relay_catch_up(
    stack: Stack,
    *,
    backlog: int,
    timeout: float,
    ledger_timeout: float,
    say: Say,
) -> RelayFigures:
    """Stop both relays, store a backlog, start intake and time the drain."""
    assert stack.database_url is not None
    url = stack.database_url
    say("  stopping intake and dispatch (both run a relay)")
    stack.stop_service("intake")
    stack.stop_service("dispatch")
    began = time.monotonic()
    first_id, last_id, mean_size = asyncio.run(insert_backlog(url, backlog))
    say(
        f"  inserted {backlog} events + outbox rows (mean value {mean_size:.0f} B) "
        f"in {time.monotonic() - began:.1f} s"
    )
    left = asyncio.run(_count(url, _UNPUBLISHED))
    if left != backlog:
        say(f"  [yellow]{left} rows unpublished, not {backlog}[/yellow]")
    stack.start_service("intake")
    started = time.monotonic()
    meter = CpuMeter(stack_processes(stack))
    first, at_first, zero = asyncio.run(
        _drain(url, first_id, last_id, timeout, on_first_progress=meter.start)
    )
    cpu = meter.stop()
    if zero is None or first is None:
        raise TimeoutError(f"the relay did not drain {left} rows in {timeout:.0f} s")
    in_db = asyncio.run(_published_span(url, first_id))
    draining = zero - first
    say(f"  relay drained {left} rows {zero - started:.2f} s after intake started")
    ledger_done, _ = asyncio.run(
        _wait_for(
            url,
            _LEDGER_BEHIND,
            [],
            lambda v: v <= 0,
            limit_seconds=ledger_timeout,
            interval=0.5,
        )
    )
    ledger_seconds = time.monotonic() - started
    say(
        f"  ledger {'complete' if ledger_done else '[yellow]still behind[/yellow]'}"
        f" {ledger_seconds:.1f} s after intake started"
    )
    return RelayFigures(
        backlog=left,
        seconds_from_start=zero - started,
        seconds_draining=draining,
        seconds_in_database=in_db,
        events_per_second=at_first / draining if draining > 0 else float("inf"),
        cpu_percent=cpu,
        ledger_seconds=ledger_seconds if ledger_done else None,
        ledger_events_per_second=left / ledger_seconds if ledger_done else None,
    )


async def _count(database_url: str, query: str) -> int:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


def baseline_target(port: int) -> Target:
    return Target("baseline", LOOPBACK, port)
