"""The measurements: append through `LedgerAppender`, whole-ledger verify, history.

Every figure beside a target comes from the real code path; the raw figures next to
it (plain inserts, plain reads, bare hashlib) are taken in the same run over the
same rows, so the gap between them is what the ledger's own code costs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.ingest.cluster import plain_url
from bench.ingest.stats import Distribution
from bench.ledger.events import EventStream, Record, consumed
from bench.ledger.figures import (
    AppendFigures,
    CpuFigures,
    HistoryFigures,
    Segment,
    VerifyFigures,
)
from bench.timing import Timed
from services.ledger.app import create_app
from services.ledger.audit import Entry, LedgerAuditor
from services.ledger.consumer import LedgerAppender
from services.ledger.queries import (
    CHUNK,
    get_history,
    iter_entries,
    order_entries,
    verify_ledger,
)
from services.ledger.settings import LedgerSettings
from services.ledger.signing import TreeSigner
from shared.db.engine import driver_of
from shared.domain.actors import Role
from shared.events.canonical import canonical_from_json
from shared.http.auth import issue_token

Say = Callable[[str], None]

ENTRY_COLUMNS: Final = (
    "position",
    "event_id",
    "order_id",
    "order_version",
    "event_type",
    "event_time",
    "recorded_at",
    "canonical",
    "chain_hash",
    "leaf_hash",
)
RAW_SCHEMA: Final = "bench_raw"
RAW_EXECUTEMANY: Final = "entry_executemany"
RAW_COPY: Final = "entry_copy"
CPU_SAMPLE: Final = 20_000  # events for the single-core CPU figures
ENTRY_SAMPLE: Final = 100_000  # entries kept in memory for the auditor-only figure


# --- SQL statement timing ------------------------------------------------------------


def _statement_kind(statement: str, executemany: bool) -> str:
    sql = " ".join(statement.split())
    upper = sql.upper()
    if "PG_ADVISORY_XACT_LOCK" in upper:
        kind = "SELECT pg_advisory_xact_lock"
    elif "MAX(" in upper:
        kind = "SELECT max(position)"
    elif "DISTINCT ON" in upper:
        kind = "SELECT chain heads (DISTINCT ON)"
    elif upper.startswith("SELECT") and "MERKLE_NODE" in upper:
        kind = "SELECT frontier nodes"
    elif upper.startswith("SELECT") and "LEAF_HASH" in upper:
        kind = "SELECT frontier leaf"
    elif upper.startswith("INSERT INTO"):
        kind = "INSERT " + sql.split()[2].removeprefix("ledger.")
    else:
        kind = sql[:40]
    return kind + (" (executemany)" if executemany else "")


class StatementTimer:
    """Seconds per kind of SQL statement, from SQLAlchemy's cursor events.

    With the asyncpg driver the greenlet resumes (and `after_cursor_execute` fires)
    once the server answered, so the time is the round trip plus the driver.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.times: dict[str, Timed] = {}
        self._engine = engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._before)
        event.listen(self._engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._before)
        event.remove(self._engine, "after_cursor_execute", self._after)

    def _before(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        started = conn.info.pop("bench_started", None)
        if started is None:
            return
        rows = len(parameters) if executemany and parameters is not None else 1
        kind = _statement_kind(statement, executemany)
        self.times.setdefault(kind, Timed()).add(rows, time.perf_counter() - started)


# --- append --------------------------------------------------------------------------


@dataclass(slots=True)
class RawInserter:
    """The same rows into plain tables (same columns and indexes, no triggers)."""

    conn: asyncpg.Connection[asyncpg.Record]

    @classmethod
    async def connect(cls, database_url: str, *, create_tables: bool) -> RawInserter:
        conn = await asyncpg.connect(plain_url(database_url))
        if create_tables:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
            for table in (RAW_EXECUTEMANY, RAW_COPY):
                await conn.execute(
                    f"CREATE TABLE {RAW_SCHEMA}.{table} (LIKE ledger.ledger_entry "
                    "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
                )
        return cls(conn)

    async def rows(self, start: int, end: int) -> list[tuple[Any, ...]]:
        records = await self.conn.fetch(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM ledger.ledger_entry "
            "WHERE position >= $1 AND position < $2 ORDER BY position",
            start,
            end,
        )
        return [tuple(r) for r in records]

    async def executemany(self, rows: list[tuple[Any, ...]]) -> float:
        placeholders = ", ".join(f"${i + 1}" for i in range(len(ENTRY_COLUMNS)))
        began = time.perf_counter()
        async with self.conn.transaction():
            await self.conn.executemany(
                f"INSERT INTO {RAW_SCHEMA}.{RAW_EXECUTEMANY} "
                f"({', '.join(ENTRY_COLUMNS)}) VALUES ({placeholders})",
                rows,
            )
        return time.perf_counter() - began

    async def copy(self, rows: list[tuple[Any, ...]]) -> float:
        began = time.perf_counter()
        async with self.conn.transaction():
            await self.conn.copy_records_to_table(
                RAW_COPY, schema_name=RAW_SCHEMA, columns=ENTRY_COLUMNS, records=rows
            )
        return time.perf_counter() - began

    async def close(self) -> None:
        await self.conn.close()


@dataclass(slots=True)
class AppendSamples:
    """Events kept for the single-core CPU figures."""

    values: list[bytes]
    canonical: list[bytes]


async def append(
    engine: AsyncEngine,
    signer: TreeSigner,
    stream: EventStream,
    *,
    batch: int,
    database_url: str,
    raw_every: int,
    time_limit: float,
    segment: int,
    say: Say,
) -> tuple[AppendFigures, AppendSamples]:
    """Load the whole stream through `LedgerAppender.handle`, one transaction a batch.

    Times each transaction (pool checkout, handle, commit) on its own; generating
    and parsing the records happen between transactions and are timed apart.
    """
    figures = AppendFigures(batch_size=batch, mean_value_bytes=stream.mean_value_bytes)
    samples = AppendSamples(values=[], canonical=[])
    appender = LedgerAppender(signer)
    raw = await RawInserter.connect(database_url, create_tables=raw_every > 0)
    timer = StatementTimer(engine)
    batch_ms: list[float] = []
    current = Segment(first=0, count=0, seconds=0.0)
    seen: dict[str, float] = {}  # statement seconds up to the previous segment
    size = 0
    began = time.perf_counter()
    deadline = began + time_limit
    try:
        number = 0
        while True:
            t0 = time.perf_counter()
            if t0 > deadline and stream.emitted < stream.entries:
                figures.stopped_early = True
                records: list[Record] = stream.rest_of_long_order()
                say(
                    f"  [yellow]time limit reached at {size:,} entries; appending "
                    f"the long order's last {len(records)} events and stopping"
                    "[/yellow]"
                )
            else:
                records = stream.take(batch)
            if not records:
                break
            if len(samples.values) < CPU_SAMPLE:
                samples.values.extend(r.value for r in records)
            t1, c1 = time.perf_counter(), time.process_time()
            events = consumed(records, first_offset=size)
            t2, c2 = time.perf_counter(), time.process_time()
            figures.generate.add(len(records), t1 - t0)
            figures.parse.add(len(records), c2 - c1)

            async with engine.begin() as conn:
                t3 = time.perf_counter()
                await appender.handle(events, conn)
                t4 = time.perf_counter()
            t5, c5 = time.perf_counter(), time.process_time()
            n = len(events)
            figures.appended.add(n, t5 - t2)
            figures.appended_cpu.add(n, c5 - c2)
            figures.handle.add(n, t4 - t3)
            figures.commit.add(n, t5 - t4)
            batch_ms.append(1000.0 * (t5 - t2))
            current.count += n
            current.seconds += t5 - t2
            current.cpu_seconds += c5 - c2
            current.batches += 1
            current.handle_seconds += t4 - t3
            current.commit_seconds += t5 - t4

            raw_turn = raw_every > 0 and number % raw_every == 0
            if raw_turn or len(samples.canonical) < ENTRY_SAMPLE:
                # The rows exactly as the appender stored them (untimed read).
                rows = await raw.rows(size, size + n)
                if len(samples.canonical) < ENTRY_SAMPLE:
                    samples.canonical.extend(bytes(r[7]) for r in rows)
                if raw_turn:
                    figures.raw_executemany.add(n, await raw.executemany(rows))
                    figures.raw_copy.add(n, await raw.copy(rows))
            size += n
            number += 1
            if current.count >= segment or figures.stopped_early:
                _close(current, timer, seen)
                figures.segments.append(current)
                _progress(say, size, current, figures, began)
                current = Segment(first=size, count=0, seconds=0.0)
            if figures.stopped_early:
                break
        if current.count:
            _close(current, timer, seen)
            figures.segments.append(current)
            _progress(say, size, current, figures, began)
    finally:
        timer.close()
        await raw.close()
    figures.wall_seconds = time.perf_counter() - began
    figures.batch_ms = Distribution.of(batch_ms)
    figures.statements = timer.times
    sampled = len(samples.canonical)
    figures.mean_canonical_bytes = (
        sum(map(len, samples.canonical)) / sampled if sampled else 0.0
    )
    return figures, samples


def _close(segment: Segment, timer: StatementTimer, seen: dict[str, float]) -> None:
    """Record the segment's share of each statement kind."""
    for kind, timed in timer.times.items():
        segment.statements[kind] = timed.seconds - seen.get(kind, 0.0)
        seen[kind] = timed.seconds


def _short(kind: str) -> str:
    return kind.removesuffix(" (executemany)").replace(" (DISTINCT ON)", "")


def _progress(
    say: Say, size: int, segment: Segment, figures: AppendFigures, began: float
) -> None:
    per_batch = 1000.0 / max(segment.batches, 1)
    in_sql = sum(segment.statements.values())
    top = sorted(segment.statements.items(), key=lambda i: -i[1])[:3]
    say(
        f"  {size:>10,} entries | last {segment.count:,}: "
        f"{segment.per_second:,.0f} events/s, {segment.per_cpu_second:,.0f} per "
        f"CPU-second of this process | overall {figures.appended.per_second:,.0f}/s "
        f"| {time.perf_counter() - began:,.0f} s"
    )
    say(
        "      ms/batch: Python in handle "
        f"{(segment.handle_seconds - in_sql) * per_batch:.0f}, "
        + ", ".join(
            f"{_short(kind)} {seconds * per_batch:.0f}" for kind, seconds in top
        )
        + f", COMMIT {segment.commit_seconds * per_batch:.0f}"
    )


# --- single-core CPU of the per-event steps --------------------------------------------


def _timed(count: int, work: Callable[[], object]) -> Timed:
    """CPU time of `work` (process time: this is single-threaded, so one core's
    worth, and unaffected by other processes taking turns on the cores)."""
    began = time.process_time()
    work()
    return Timed(count, time.process_time() - began)


def cpu_figures(samples: AppendSamples, cpu: CpuFigures) -> None:
    """json.loads / RFC 8785 / SHA-256 per event, over the sampled events."""
    values, canonical = samples.values, samples.canonical
    if values:
        cpu.json_loads = _timed(len(values), lambda: [json.loads(v) for v in values])
        cpu.canonical = _timed(
            len(values), lambda: [canonical_from_json(v) for v in values]
        )
    if canonical:
        cpu.sha256_once = _timed(
            len(canonical), lambda: [hashlib.sha256(c).digest() for c in canonical]
        )
        cpu.canonical_mb_per_s = (
            sum(map(len, canonical)) / cpu.sha256_once.seconds / 1e6
        )

        def appender_hashes() -> None:
            # What handle() hashes per event: the leaf, the chain link and (amortised,
            # n - 1 for n leaves) one Merkle node.
            previous = bytes(32)
            for c in canonical:
                leaf = hashlib.sha256(b"\x00" + c).digest()
                previous = hashlib.sha256(previous + c).digest()
                hashlib.sha256(b"\x01" + leaf + previous).digest()

        cpu.sha256_appender = _timed(len(canonical), appender_hashes)


# --- verify --------------------------------------------------------------------------


async def verify(
    engine: AsyncEngine, signer: TreeSigner, *, expected: int, cpu: CpuFigures
) -> VerifyFigures:
    """Raw fetch, iter_entries alone, then verify_ledger over the whole ledger."""
    figures = VerifyFigures()
    async with engine.connect() as conn:
        driver = await driver_of(conn)
        # The same keyset query as iter_entries, without building Entry objects.
        sql = (
            "SELECT position, event_id, order_id, order_version, canonical, "
            "chain_hash, leaf_hash FROM ledger.ledger_entry "
            "WHERE position >= $1 AND ($2::bigint IS NULL OR position < $2) "
            "ORDER BY position LIMIT $3"
        )
        began = time.perf_counter()
        position, count = 0, 0
        while True:
            rows = await driver.fetch(sql, position, None, CHUNK)
            count += len(rows)
            if len(rows) < CHUNK:
                break
            position = rows[-1]["position"] + 1
        figures.fetch_only = Timed(count, time.perf_counter() - began)

        kept: list[Entry] = []
        began = time.perf_counter()
        count = 0
        async for entry in iter_entries(conn):
            count += 1
            if len(kept) < ENTRY_SAMPLE:
                kept.append(entry)
        figures.iter_entries = Timed(count, time.perf_counter() - began)

    async with engine.connect() as conn:
        began, cpu_began = time.perf_counter(), time.process_time()
        result: dict[str, Any] = {}
        async for line in verify_ledger(conn, signer):
            if "result" in line:
                result = line["result"]
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - cpu_began
    figures.verify = Timed(int(result.get("events", 0)), seconds)
    figures.verify_cpu = Timed(figures.verify.count, cpu_seconds)
    figures.valid = bool(result.get("valid")) and figures.verify.count == expected
    figures.findings = [str(f) for f in result.get("findings", [])][:5]
    if figures.verify.count != expected:
        figures.findings.append(
            f"verified {figures.verify.count:,} entries, expected {expected:,}"
        )

    def audit_kept() -> None:
        auditor = LedgerAuditor()
        for entry in kept:
            auditor.add(entry)

    cpu.auditor_add = _timed(len(kept), audit_kept)
    return figures


# --- history -------------------------------------------------------------------------


async def history(
    engine: AsyncEngine,
    order_id: UUID,
    *,
    events: int,
    calls: int,
    http_settings: LedgerSettings | None,
) -> HistoryFigures:
    """get_history on a pooled connection per call (as the API's dependency does),
    then GET /v1/orders/{id}/history through the ledger app (httpx ASGITransport)."""
    warmup = max(10, calls // 20)
    direct: list[float] = []
    sql: list[float] = []
    for i in range(warmup + calls):
        began = time.perf_counter()
        async with engine.connect() as conn:
            entries = await get_history(conn, order_id)
        elapsed = time.perf_counter() - began
        if len(entries) != events:
            raise RuntimeError(f"history has {len(entries)} events, not {events}")
        async with engine.connect() as conn:
            await driver_of(conn)  # as get_history does before its query
            began = time.perf_counter()
            await order_entries(conn, order_id)
            query = time.perf_counter() - began
        if i >= warmup:
            direct.append(1000.0 * elapsed)
            sql.append(1000.0 * query)
    figures = HistoryFigures(
        events=events,
        direct_ms=Distribution.of(direct),
        sql_ms=Distribution.of(sql),
    )
    if http_settings is None:
        return figures
    try:
        figures.http_ms = await _http_history(
            http_settings, order_id, events=events, calls=calls, warmup=warmup
        )
    except Exception as err:  # the direct figure stands on its own
        figures.http_error = f"{type(err).__name__}: {err}"
    return figures


async def _http_history(
    settings: LedgerSettings, order_id: UUID, *, events: int, calls: int, warmup: int
) -> Distribution:
    headers = {
        "Authorization": "Bearer "
        + issue_token(settings, role=Role.AUDITOR, subject="bench-auditor")
    }
    app = create_app(settings)
    latencies: list[float] = []
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ledger.bench"
        ) as client:
            url = f"/v1/orders/{order_id}/history"
            for i in range(warmup + calls):
                began = time.perf_counter()
                response = await client.get(url, headers=headers)
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(
                        f"GET {url}: {response.status_code} {response.text[:200]}"
                    )
                if i == 0 and len(response.json()["entries"]) != events:
                    raise RuntimeError("the HTTP history has the wrong length")
                if i >= warmup:
                    latencies.append(1000.0 * elapsed)
    return Distribution.of(latencies)


def http_settings(database_url: str, key_path: Path) -> LedgerSettings:
    return LedgerSettings(
        database_url=database_url,
        run_consumer=False,
        ledger_signing_key_path=key_path,
        database_pool_size=2,
        # No default secret any more: the benchmark signs its own auditor token.
        jwt_secret=secrets.token_urlsafe(48),
    )
