"""The in-process measurements: apply through `IndicatorProjector`, queries, plans.

Every figure comes from the real code path: the projector's `apply`,
`get_indicators`, `compute_indicators` and `get_scores`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import psutil
from asyncpg.connection import LoggedQuery
from sqlalchemy import Connection, Text, cast, event, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.ingest.stats import Distribution
from bench.metrics.events import SLICE_REGION, EventStream
from bench.metrics.figures import (
    MB,
    ApplyFigures,
    CpuFigures,
    MemoryPoint,
    PlanFigures,
    QueryFigures,
    Segment,
)
from bench.timing import Timed
from services.metrics.catalog import SliceFilter
from services.metrics.consumer import NOT_STORED, IndicatorProjector, fact_row
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import compute_indicators, get_indicators, resolve_slice
from services.metrics.schemas import Window
from services.metrics.scores import get_scores
from services.metrics.store import complaint, order_state, rating
from shared.db.engine import driver_of
from shared.domain.indicators import OrderFacts, apply_event
from shared.domain.lifecycle import OrderEvent

Say = Callable[[str], None]

POLICY: Final = IndicatorPolicy(label="bench")
CPU_SAMPLE_ROWS: Final = 1000
_TABLE: Final = re.compile(r"metrics\.(\w+)")
_INTROSPECTION: Final = ("pg_catalog", "'jit'")  # in asyncpg's _introspect_types


# --- apply ----------------------------------------------------------------------------


def statement_kind(sql: str) -> str:
    """`SELECT order_fact`, `INSERT order_fact upsert`, `COMMIT`, ... for a query
    text: its verb, the first metrics table it names, and whether it upserts."""
    table = _TABLE.search(sql)
    if table is None:
        return " ".join(sql.split())[:40].rstrip(";")  # BEGIN, COMMIT, ...
    verb = sql.split(None, 1)[0].upper()
    upsert = " upsert" if "DO UPDATE" in sql.upper() else ""
    return f"{verb} {table.group(1)}{upsert}"


class StatementTimer:
    """Seconds per kind of statement sent on the asyncpg connection, from asyncpg's
    query logger (`elapsed`: the round trip plus encoding the arguments and decoding
    the result). asyncpg calls the logger soon after each statement, not inline.
    Its type introspection (pg_catalog, with JIT off around it) is left out: it
    runs inside the first prepare of the statement it serves, whose time holds it."""

    def __init__(self) -> None:
        self.figures: dict[str, Timed] = {}

    def logged(self, record: LoggedQuery) -> None:
        if any(marker in record.query for marker in _INTROSPECTION):
            return
        kind = statement_kind(record.query)
        timed = self.figures.get(kind)
        if timed is None:
            timed = self.figures[kind] = Timed()
        timed.add(1, record.elapsed)


def memory_point(events: int) -> MemoryPoint:
    """RSS of this process after a full collection (so garbage is not counted)."""
    gc.collect()
    return MemoryPoint(
        events=events,
        rss_mb=psutil.Process().memory_info().rss / MB,
        python_objects=len(gc.get_objects()),
    )


class _Transactions:
    """One apply transaction per batch, timed part by part (see `ApplyFigures`)."""

    def __init__(self, engine: AsyncEngine, figures: ApplyFigures) -> None:
        self._engine = engine
        self._figures = figures
        self._projector = IndicatorProjector()
        self.timer = StatementTimer()

    async def apply(self, events: list[OrderEvent]) -> float:
        """Seconds of the whole transaction, from pool checkout to release."""
        figures = self._figures
        began = time.perf_counter()
        async with self._engine.connect() as conn:
            driver = await driver_of(conn)  # outside a transaction: no I/O
            driver.add_query_logger(self.timer.logged)
            try:
                async with conn.begin():
                    t0 = time.perf_counter()
                    # The consumer's own reads start the transaction before the
                    # handler runs; here driver_of's SELECT 1 does.
                    await driver_of(conn)
                    t1 = time.perf_counter()
                    await self._projector.apply(events, conn)
                    t2 = time.perf_counter()
            finally:
                driver.remove_query_logger(self.timer.logged)
        seconds = time.perf_counter() - began
        figures.begin.add(len(events), t1 - t0)
        figures.apply_call.add(len(events), t2 - t1)
        return seconds


async def apply_phase(
    engine: AsyncEngine,
    stream: EventStream,
    *,
    batch: int,
    time_limit: float,
    segment: int,
    memory_from: int,
    say: Say,
) -> ApplyFigures:
    """Fold the whole stream through `IndicatorProjector.apply`, one transaction a
    batch (as the consumer does). Generating the events happens between the
    transactions and is timed apart."""
    figures = ApplyFigures(batch_size=batch, window=stream.window)
    transactions = _Transactions(engine, figures)
    checkpoints = sorted(
        {memory_from, *range(segment, stream.total, segment), stream.total}
    )
    figures.memory.append(memory_point(0))
    batch_ms: list[float] = []
    current = Segment(first=0)
    distinct_sum = batches_in_segment = applied = 0
    began = time.perf_counter()
    deadline = began + time_limit

    def close_segment() -> None:
        current.distinct_orders_per_batch = distinct_sum / max(batches_in_segment, 1)
        current.rss_mb = psutil.Process().memory_info().rss / MB
        figures.segments.append(current)
        cpu = 1e6 * current.cpu_seconds / max(current.count, 1)
        say(
            f"  {applied:>10,} events: {current.per_second:>7,.0f} events/s over the "
            f"last {current.count:,} ({cpu:,.0f} µs CPU each; overall "
            f"{figures.applied.per_second:,.0f}/s); RSS {current.rss_mb:,.0f} MB; "
            f"{current.distinct_orders_per_batch:,.0f} orders/batch; "
            f"{time.perf_counter() - began:,.0f} s elapsed"
        )

    while True:
        t0 = time.perf_counter()
        if t0 > deadline and stream.emitted < stream.total:
            figures.stopped_early = True
            say(
                f"  [yellow]time limit reached at {applied:,} events; "
                "stopping the load[/yellow]"
            )
            break
        events = stream.take(batch)
        if not events:
            break
        n = len(events)
        figures.generate.add(n, time.perf_counter() - t0)
        cpu0 = time.process_time()
        seconds = await transactions.apply(events)
        cpu = time.process_time() - cpu0
        figures.applied.add(n, seconds)
        figures.applied_cpu.add(n, cpu)
        batch_ms.append(1000.0 * seconds)
        current.count += n
        current.seconds += seconds
        current.cpu_seconds += cpu
        distinct_sum += len({e.order_id for e in events})
        batches_in_segment += 1
        applied += n
        if checkpoints and applied >= checkpoints[0]:
            while checkpoints and applied >= checkpoints[0]:
                checkpoints.pop(0)
            figures.memory.append(memory_point(applied))
        if current.count >= segment:
            close_segment()
            current = Segment(first=applied)
            distinct_sum = batches_in_segment = 0
    if current.count:
        close_segment()
    if figures.memory[-1].events != applied:
        figures.memory.append(memory_point(applied))
    await asyncio.sleep(0)  # the query logger's last calls (COMMIT) are queued
    figures.wall_seconds = time.perf_counter() - began
    figures.batch_ms = Distribution.of(batch_ms)
    figures.statements = transactions.timer.figures
    figures.orders = stream.orders_started
    figures.late_events = stream.late
    figures.shapes = dict(stream.shape_counts)
    async with engine.connect() as conn:
        count = select(func.count())
        figures.ratings = int(await conn.scalar(count.select_from(rating)) or 0)
        figures.complaints = int(await conn.scalar(count.select_from(complaint)) or 0)
    return figures


# --- single-core CPU of apply()'s steps ---------------------------------------------------


def _timed(count: int, work: Callable[[], object]) -> Timed:
    """This process's CPU time for `work` (robust to other processes on the cores)."""
    began = time.process_time()
    work()
    return Timed(count, time.process_time() - began)


async def cpu_figures(engine: AsyncEngine, cpu: CpuFigures, *, seed: int) -> None:
    """Per-row and per-event CPU of what apply() does in Python, on samples."""
    async with engine.connect() as conn:
        stored = [
            str(text_)
            for text_ in await conn.scalars(
                select(cast(order_state.c.facts, Text)).limit(CPU_SAMPLE_ROWS)
            )
        ]
    if not stored:
        return
    facts = [OrderFacts.model_validate_json(f) for f in stored]
    cpu.model_validate = _timed(
        len(stored), lambda: [OrderFacts.model_validate_json(f) for f in stored]
    )
    cpu.model_dump_json = _timed(
        len(facts), lambda: [f.model_dump_json(exclude=NOT_STORED) for f in facts]
    )
    cpu.fact_row = _timed(len(facts), lambda: [fact_row(f) for f in facts])
    # apply_event over a fresh stream folded in memory (no database).
    stream = EventStream(total=20_000, window=500, technicians=50, days=5, seed=seed)
    sample = stream.take(20_000)

    def fold() -> None:
        state: dict[Any, OrderFacts | None] = {}
        for e in sample:
            state[e.order_id] = apply_event(state.get(e.order_id), e)

    cpu.apply_event = _timed(len(sample), fold)


# --- queries ------------------------------------------------------------------------------

QueryCall = Callable[[AsyncConnection], Awaitable[object]]


def query_calls(now: datetime) -> list[tuple[str, QueryCall]]:
    """The indicator reads the API serves, as their handlers call them."""

    def indicators(window: Window, region: str | None = None) -> QueryCall:
        slice_ = resolve_slice(window, start=None, end=None, now=now, region=region)

        async def call(conn: AsyncConnection) -> object:
            return await get_indicators(conn, slice_, policy=POLICY)

        return call

    async def live(conn: AsyncConnection) -> object:
        return await compute_indicators(conn, SliceFilter(), POLICY.catalog)

    month = resolve_slice(Window.MONTH, start=None, end=None, now=now)

    async def scores(conn: AsyncConnection) -> object:
        return await get_scores(conn, month, policy=POLICY)

    return [
        ("get_indicators window=all", indicators(Window.ALL)),
        ("get_indicators window=24h", indicators(Window.DAY)),
        (
            f"get_indicators window=all region={SLICE_REGION}",
            indicators(Window.ALL, SLICE_REGION),
        ),
        ("compute_indicators window=all (live stream)", live),
        ("get_scores window=30d (API default)", scores),
    ]


async def query_phase(
    engine: AsyncEngine,
    *,
    calls: int,
    time_limit: float,
    say: Say,
) -> list[QueryFigures]:
    """p50/p99 of each read: a pooled connection per call, as the API dependency
    does; a few warm-up calls first; at most `time_limit` seconds per read."""
    out: list[QueryFigures] = []
    warmup = max(3, calls // 40)
    for name, call in query_calls(datetime.now(UTC)):
        latencies: list[float] = []
        error: str | None = None
        began = time.perf_counter()
        stopped = False
        for i in range(warmup + calls):
            if time.perf_counter() - began > time_limit:
                stopped = True
                break
            t0 = time.perf_counter()
            try:
                async with engine.connect() as conn:
                    await call(conn)
            except Exception as err:  # a failing read is a figure too
                error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                break
            if i >= warmup:
                latencies.append(1000.0 * (time.perf_counter() - t0))
        figures = QueryFigures(
            name=name,
            calls=len(latencies),
            ms=Distribution.of(latencies),
            stopped_early=stopped,
            error=error,
        )
        out.append(figures)
        say(
            f"  {name}: "
            + (f"[red]{error}[/red]" if error else figures.ms.describe())
            + (" [yellow](time limit)[/yellow]" if stopped else "")
        )
    return out


# --- plans ----------------------------------------------------------------------------------


class _Capture:
    """The SELECTs one call sends, with their parameters as the driver got them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        self._engine = engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._before)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._before)

    def _before(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "metrics." in statement:
            self.statements.append((statement, tuple(parameters or ())))


def _scans(plan: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []

    def visit(node: dict[str, Any]) -> None:
        kind = node.get("Node Type", "")
        if "Scan" in kind:
            where = node.get("Relation Name") or node.get("Index Name") or ""
            index = node.get("Index Name")
            found.append(
                f"{kind} on {where}"
                + (f" using {index}" if index and index != where else "")
                + f" (rows {node.get('Actual Rows', 0):,}, "
                f"{node.get('Actual Total Time', 0.0):.1f} ms)"
            )
        for child in node.get("Plans", []):
            visit(child)

    for entry in plan:
        visit(entry["Plan"])
    # A filtered aggregate repeats the same index scan once per FILTER clause.
    counted = dict.fromkeys(found, 0)
    for scan in found:
        counted[scan] += 1
    return [f"{n} x {scan}" if n > 1 else scan for scan, n in counted.items()]


def _label(statement: str) -> str:
    upper = statement.upper()
    table = "?"
    for name in (
        "order_fact",
        "rating",
        "complaint",
        "consumer_offset",
        "applied_watermark",
    ):
        if f"FROM METRICS.{name.upper()}" in upper:
            table = name
            break
    if "GROUP BY" in upper:
        return f"{table} GROUP BY technician"
    if "OPEN IS TRUE" in upper or '"OPEN" IS TRUE' in upper:
        return f"{table} count(open)"
    return f"{table} aggregates" if "FILTER (WHERE" in upper else table


async def plan_phase(engine: AsyncEngine, *, say: Say) -> list[PlanFigures]:
    """EXPLAIN (ANALYZE, BUFFERS) of every SELECT over the metrics tables that each
    read sends (captured from one real call, then explained with its parameters)."""
    out: list[PlanFigures] = []
    for name, call in query_calls(datetime.now(UTC)):
        capture = _Capture(engine)
        try:
            async with engine.connect() as conn:
                await call(conn)
        finally:
            capture.close()
        async with engine.connect() as conn:
            driver = await driver_of(conn)
            for statement, parameters in capture.statements:
                label = _label(statement)
                if label in ("consumer_offset", "applied_watermark"):
                    continue  # provenance: one-row lookups
                raw = await driver.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, *parameters
                )
                plan = json.loads(raw) if isinstance(raw, str) else raw
                text = "\n".join(
                    r[0]
                    for r in await driver.fetch(
                        "EXPLAIN (ANALYZE, BUFFERS) " + statement, *parameters
                    )
                )
                figures = PlanFigures(
                    query=name,
                    statement=label,
                    execution_ms=float(plan[0].get("Execution Time", 0.0)),
                    planning_ms=float(plan[0].get("Planning Time", 0.0)),
                    scans=_scans(plan),
                    text=text,
                )
                out.append(figures)
                say(
                    f"  {name} / {label}: {figures.execution_ms:.1f} ms "
                    f"(+{figures.planning_ms:.1f} planning): "
                    + "; ".join(figures.scans)
                )
    return out


async def table_sizes(engine: AsyncEngine) -> dict[str, float]:
    async with engine.connect() as conn:
        driver = await driver_of(conn)
        rows = await driver.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'metrics' AND c.relkind = 'r' "
            "ORDER BY bytes DESC"
        )
    return {str(r["relname"]): int(r["bytes"]) / MB for r in rows}
