"""The in-process measurements: apply through `IndicatorProjector`, queries, plans.

Every figure beside a target comes from the real code path (the projector's
`apply`, `get_indicators`, `compute_indicators`, `get_scores`); the raw figures
next to them (the same rows upserted with a fixed-text statement) are taken in the
same run over the same rows, so the gap is what the current code's choices cost.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import psutil
from sqlalchemy import (
    Connection,
    Delete,
    Insert,
    Select,
    Text,
    Update,
    cast,
    event,
    func,
    select,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.ingest.cluster import plain_url
from bench.ingest.stats import Distribution
from bench.metrics.events import SLICE_REGION, EventStream
from bench.metrics.figures import (
    MB,
    ApplyFigures,
    CpuFigures,
    Failure,
    MemoryPoint,
    PlanFigures,
    QueryFigures,
    Segment,
    StatementFigures,
    Timed,
)
from services.metrics.catalog import SliceFilter
from services.metrics.consumer import IndicatorProjector, fact_row
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import compute_indicators, get_indicators, resolve_slice
from services.metrics.schemas import Window
from services.metrics.scores import get_scores
from services.metrics.store import complaint, order_fact, rating
from shared.db.engine import driver_of
from shared.domain.indicators import OrderFacts, apply_event
from shared.domain.lifecycle import OrderEvent

Say = Callable[[str], None]

# asyncpg refuses a statement with more bound parameters than this.
ASYNCPG_MAX_ARGS: Final = 32767
RAW_SCHEMA: Final = "bench_raw"
POLICY: Final = IndicatorPolicy(label="bench")
CPU_SAMPLE_ROWS: Final = 1000


# --- SQL statement timing ------------------------------------------------------------


def statement_kind(statement: object) -> str:
    """`INSERT order_fact`, `SELECT order_fact`, ... for a SQLAlchemy statement."""
    match statement:
        case Insert() | Update() | Delete():
            verb = type(statement).__name__.upper()
            return f"{verb} {getattr(statement.table, 'name', statement.table)}"
        case Select():
            names = [
                str(getattr(f, "name", f)) for f in statement.get_final_froms()
            ] or ["-"]
            return "SELECT " + ", ".join(names)
        case _:
            return type(statement).__name__


class StatementTimer:
    """Seconds per kind of statement, from SQLAlchemy's events: `execute` (statement
    compilation, bind processing and the round trip) and the cursor alone (the
    round trip and the driver; with asyncpg that includes preparing a new SQL text
    on the server). The difference is SQLAlchemy's work in Python."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.figures: dict[str, StatementFigures] = {}
        self._engine = engine.sync_engine
        self._hooks: list[tuple[str, Callable[..., None]]] = [
            ("before_execute", self._before_execute),
            ("after_execute", self._after_execute),
            ("before_cursor_execute", self._before_cursor),
            ("after_cursor_execute", self._after_cursor),
        ]
        for name, hook in self._hooks:
            event.listen(self._engine, name, hook)

    def close(self) -> None:
        for name, hook in self._hooks:
            event.remove(self._engine, name, hook)

    def _entry(self, statement: object) -> StatementFigures:
        kind = statement_kind(statement)
        found = self.figures.get(kind)
        if found is None:
            found = self.figures[kind] = StatementFigures()
        return found

    def _before_execute(self, conn: Connection, clause: Any, *_: Any) -> None:
        conn.info["bench_execute"] = time.perf_counter()

    def _after_execute(self, conn: Connection, clause: Any, *_: Any) -> None:
        started = conn.info.pop("bench_execute", None)
        if started is not None:
            entry = self._entry(clause)
            entry.calls += 1
            entry.execute_seconds += time.perf_counter() - started

    def _before_cursor(self, conn: Connection, *_: Any) -> None:
        conn.info["bench_cursor"] = time.perf_counter()

    def _after_cursor(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        started = conn.info.pop("bench_cursor", None)
        compiled = getattr(context, "compiled", None)
        if started is None or compiled is None:
            return
        entry = self._entry(compiled.statement)
        entry.cursor_seconds += time.perf_counter() - started
        count = len(parameters) if isinstance(parameters, Sequence) else 0
        entry.parameters += count
        entry.max_parameters = max(entry.max_parameters, count)


# --- memory ---------------------------------------------------------------------------


def memory_point(events: int, engine: AsyncEngine) -> MemoryPoint:
    """RSS of this process after a full collection (so garbage is not counted)."""
    gc.collect()
    cache = getattr(engine.sync_engine, "_compiled_cache", None)
    return MemoryPoint(
        events=events,
        rss_mb=psutil.Process().memory_info().rss / MB,
        python_objects=len(gc.get_objects()),
        compiled_cache_entries=len(cache) if cache is not None else -1,
    )


# --- raw alternatives for the facts upsert ---------------------------------------------


@dataclass(slots=True)
class RawUpserts:
    """The rows apply() just upserted, written again into a copy of the table with
    fixed-text statements (what the report suggests): one `INSERT .. SELECT FROM
    unnest($1::uuid[], ..)` and an asyncpg `executemany`."""

    conn: asyncpg.Connection[asyncpg.Record]
    columns: list[str]
    types: list[str]

    @classmethod
    async def connect(cls, database_url: str) -> RawUpserts:
        conn = await asyncpg.connect(plain_url(database_url))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
        for table in ("fact_unnest", "fact_executemany"):
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {RAW_SCHEMA}.{table} "
                "(LIKE metrics.order_fact INCLUDING ALL)"
            )
        rows = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type "
            "FROM pg_attribute WHERE attrelid = 'metrics.order_fact'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
        return cls(conn, [r["attname"] for r in rows], [r["type"] for r in rows])

    def _quoted(self) -> list[str]:
        return [f'"{c}"' for c in self.columns]

    def _conflict(self) -> str:
        return ", ".join(f"{c} = EXCLUDED.{c}" for c in self._quoted()[1:])

    async def rows(self, order_ids: list[Any]) -> list[tuple[Any, ...]]:
        found = await self.conn.fetch(
            f"SELECT {', '.join(self._quoted())} FROM metrics.order_fact "
            "WHERE order_id = ANY($1::uuid[])",
            order_ids,
        )
        return [tuple(r) for r in found]

    async def unnest(self, rows: list[tuple[Any, ...]]) -> float:
        arrays = [list(column) for column in zip(*rows, strict=True)]
        casts = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(self.types))
        sql = (
            f"INSERT INTO {RAW_SCHEMA}.fact_unnest ({', '.join(self._quoted())}) "
            f"SELECT * FROM unnest({casts}) "
            f"ON CONFLICT (order_id) DO UPDATE SET {self._conflict()}"
        )
        began = time.perf_counter()
        async with self.conn.transaction():
            await self.conn.execute(sql, *arrays)
        return time.perf_counter() - began

    async def executemany(self, rows: list[tuple[Any, ...]]) -> float:
        values = ", ".join(f"${i + 1}" for i in range(len(self.columns)))
        sql = (
            f"INSERT INTO {RAW_SCHEMA}.fact_executemany ({', '.join(self._quoted())}) "
            f"VALUES ({values}) ON CONFLICT (order_id) DO UPDATE SET {self._conflict()}"
        )
        began = time.perf_counter()
        async with self.conn.transaction():
            await self.conn.executemany(sql, rows)
        return time.perf_counter() - began

    async def close(self) -> None:
        await self.conn.close()


# --- apply ----------------------------------------------------------------------------


def too_many_parameters(err: BaseException) -> bool:
    return "cannot exceed 32767" in str(err)


def _chunks(events: list[OrderEvent], size: int) -> list[list[OrderEvent]]:
    if size <= 0 or len(events) <= size:
        return [events]
    return [events[i : i + size] for i in range(0, len(events), size)]


async def apply_phase(
    engine: AsyncEngine,
    stream: EventStream,
    *,
    batch: int,
    split: int,
    time_limit: float,
    segment: int,
    memory_from: int,
    raw_every: int,
    database_url: str,
    say: Say,
) -> ApplyFigures:
    """Fold the whole stream through `IndicatorProjector.apply`, one transaction a
    batch (as the consumer does). Generating the events happens between the
    transactions and is timed apart.

    When apply() refuses a whole batch because its upsert exceeds asyncpg's
    parameter limit, the failure is recorded and from then on every batch is
    applied with one apply() call per `split` events, in the same transaction.
    """
    figures = ApplyFigures(batch_size=batch, window=stream.window, split=0)
    projector = IndicatorProjector()
    timer = StatementTimer(engine)
    raw = await RawUpserts.connect(database_url) if raw_every > 0 else None
    checkpoints = sorted(
        {memory_from, *range(segment, stream.total, segment), stream.total}
    )
    figures.memory.append(memory_point(0, engine))
    batch_ms: list[float] = []
    current = Segment(first=0)
    distinct_sum = 0
    batches_in_segment = 0
    applied = 0
    number = 0
    splitting = False
    began = time.perf_counter()
    deadline = began + time_limit

    async def run(chunks: list[list[OrderEvent]]) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        async with engine.begin() as conn:
            t1 = time.perf_counter()
            for chunk in chunks:
                await projector.apply(chunk, conn)
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        return t3 - t0, t2 - t1, t3 - t2

    try:
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
            figures.generate.add(len(events), time.perf_counter() - t0)
            distinct = len({e.order_id for e in events})
            cpu0 = time.process_time()
            try:
                chunks = _chunks(events, split if splitting else 0)
                seconds, in_apply, in_commit = await run(chunks)
            except DBAPIError as err:
                if splitting or split <= 0 or not too_many_parameters(err):
                    raise
                figures.failed.add(len(events), time.process_time() - cpu0)
                figures.failure = Failure(
                    events=len(events),
                    distinct_orders=distinct,
                    error=f"{type(err).__module__}.{type(err).__name__}: "
                    + str(err.orig if err.orig is not None else err).splitlines()[0],
                )
                say(
                    f"  [red]apply() refused a {len(events):,}-event batch over "
                    f"{distinct:,} orders: {figures.failure.error}[/red]"
                )
                say(
                    f"  [yellow]from now on: apply() per {split:,} events, "
                    "all in the batch's one transaction[/yellow]"
                )
                splitting = True
                figures.split = split
                cpu0 = time.process_time()
                chunks = _chunks(events, split)
                seconds, in_apply, in_commit = await run(chunks)
            cpu = time.process_time() - cpu0
            n = len(events)
            if len(chunks) > 1:
                figures.split_batches += 1
            figures.applied.add(n, seconds)
            figures.applied_cpu.add(n, cpu)
            figures.apply_call.add(n, in_apply)
            figures.commit.add(n, in_commit)
            batch_ms.append(1000.0 * seconds)
            current.count += n
            current.seconds += seconds
            current.cpu_seconds += cpu
            distinct_sum += distinct
            batches_in_segment += 1

            if raw is not None and number % raw_every == 0:
                rows = await raw.rows(list({e.order_id for e in events}))
                if rows:
                    figures.raw_unnest.add(len(rows), await raw.unnest(rows))
                    figures.raw_executemany.add(len(rows), await raw.executemany(rows))
            applied += n
            number += 1
            if checkpoints and applied >= checkpoints[0]:
                while checkpoints and applied >= checkpoints[0]:
                    checkpoints.pop(0)
                figures.memory.append(memory_point(applied, engine))
            if current.count >= segment:
                _close_segment(
                    figures, current, distinct_sum, batches_in_segment, engine
                )
                _progress(say, applied, current, figures, began)
                current = Segment(first=applied)
                distinct_sum = batches_in_segment = 0
        if current.count:
            _close_segment(figures, current, distinct_sum, batches_in_segment, engine)
            _progress(say, applied, current, figures, began)
        if not figures.memory or figures.memory[-1].events != applied:
            figures.memory.append(memory_point(applied, engine))
    finally:
        timer.close()
        if raw is not None:
            await raw.close()
    figures.wall_seconds = time.perf_counter() - began
    figures.batch_ms = Distribution.of(batch_ms)
    figures.statements = timer.figures
    figures.orders = stream.orders_started
    figures.late_events = stream.late
    figures.shapes = dict(stream.shape_counts)
    async with engine.connect() as conn:
        for table in (rating, complaint):
            count = int(await conn.scalar(select(func.count()).select_from(table)) or 0)
            if table is rating:
                figures.ratings = count
            else:
                figures.complaints = count
    return figures


def _close_segment(
    figures: ApplyFigures,
    current: Segment,
    distinct_sum: int,
    batches: int,
    engine: AsyncEngine,
) -> None:
    current.distinct_orders_per_batch = distinct_sum / batches if batches else 0.0
    current.rss_mb = psutil.Process().memory_info().rss / MB
    figures.segments.append(current)


def _progress(
    say: Say, applied: int, segment: Segment, figures: ApplyFigures, began: float
) -> None:
    cpu = segment.cpu_seconds / segment.count * 1e6 if segment.count else 0.0
    say(
        f"  {applied:>10,} events: {segment.per_second:>7,.0f} events/s over the last "
        f"{segment.count:,} ({cpu:,.0f} µs CPU each; overall "
        f"{figures.applied.per_second:,.0f}/s); RSS {segment.rss_mb:,.0f} MB; "
        f"{segment.distinct_orders_per_batch:,.0f} orders/batch; "
        f"{time.perf_counter() - began:,.0f} s elapsed"
    )


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
                select(cast(order_fact.c.facts, Text)).limit(CPU_SAMPLE_ROWS)
            )
        ]
    if not stored:
        return
    facts = [OrderFacts.model_validate_json(f) for f in stored]
    cpu.model_validate = _timed(
        len(stored), lambda: [OrderFacts.model_validate_json(f) for f in stored]
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
    return found


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
