"""The ledger's figures, each beside a raw baseline taken in the same run.

1. append: the stream through `LedgerAppender.handle`, one transaction a batch on the
   service's engine (as the ledger's role), as its Kafka consumer drives it (minus
   Kafka); after each batch the very rows it stored are COPYed into a plain table
   with the same columns and indexes (no triggers), one transaction a batch too.
   `ledger_append_vs_copy` = ledger events/s / raw COPY events/s.
2. verify: `verify_ledger` over the whole ledger beside a raw keyset read of the
   columns it checks (the same chunks, nothing done per row), best of two each.
   `verify_vs_raw_read` = verify rows/s / raw read rows/s.

`measure` is the entry point for other harnesses: it needs a migrated database whose
ledger is empty, and the URL of a role that may create a schema there.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.ingest.cluster import plain_url
from bench.ledger.events import EventStream, consumed
from bench.timing import Timed
from services.ledger.consumer import LedgerAppender
from services.ledger.queries import CHUNK, verify_ledger
from services.ledger.signing import TreeSigner
from services.ledger.store import ENTRY_COLUMNS
from shared.db.engine import create_engine, driver_of
from shared.db.roles import SERVICE_ROLES, url_as
from shared.serve import tune_collector
from shared.settings import CommonSettings

Say = Callable[[str], None]
RAW_TABLE: Final = "bench_raw.ledger_entry"
# What verify_ledger reads per entry.
VERIFY_COLUMNS: Final = (
    "position, order_id, order_version, canonical, chain_hash, leaf_hash"
)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


async def append(
    engine: AsyncEngine,
    raw: asyncpg.Connection[asyncpg.Record],
    signer: TreeSigner,
    stream: EventStream,
    *,
    batch: int,
    say: Say,
) -> dict[str, float]:
    """Ledger append and raw COPY of the same rows, batch by batch."""
    await raw.execute("CREATE SCHEMA IF NOT EXISTS bench_raw")
    await raw.execute(
        f"CREATE TABLE {RAW_TABLE} (LIKE ledger.ledger_entry "
        "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
    )
    columns = ", ".join(ENTRY_COLUMNS)
    appender = LedgerAppender(signer)
    ledger, copy = Timed(), Timed()
    size = 0
    while records := stream.take(batch):
        events = consumed(records, first_offset=size)  # the consumer's parse
        began = time.perf_counter()
        async with engine.begin() as conn:
            await appender.handle(events, conn)
        ledger.add(len(events), time.perf_counter() - began)
        rows = await raw.fetch(
            f"SELECT {columns} FROM ledger.ledger_entry "
            "WHERE position >= $1 ORDER BY position",
            size,
        )
        began = time.perf_counter()
        async with raw.transaction():
            await raw.copy_records_to_table(
                "ledger_entry",
                schema_name="bench_raw",
                columns=ENTRY_COLUMNS,
                records=rows,
            )
        copy.add(len(rows), time.perf_counter() - began)
        size += len(events)
        if size % (50 * batch) < batch or len(records) < batch:
            say(
                f"  {size:>9,} entries: ledger {ledger.per_second:,.0f} events/s, "
                f"raw COPY {copy.per_second:,.0f} events/s"
            )
    return {
        "ledger_entries": float(size),
        "ledger_append_eps": ledger.per_second,
        "raw_copy_eps": copy.per_second,
        "ledger_append_vs_copy": _ratio(ledger.per_second, copy.per_second),
    }


async def _raw_read(engine: AsyncEngine) -> Timed:
    """The keyset chunks verify_ledger reads, fetched and dropped."""
    sql = (
        f"SELECT {VERIFY_COLUMNS} FROM ledger.ledger_entry "
        "WHERE position >= $1 ORDER BY position LIMIT $2"
    )
    async with engine.connect() as conn:
        driver = await driver_of(conn)
        began = time.perf_counter()
        position, count = 0, 0
        while rows := await driver.fetch(sql, position, CHUNK):
            count += len(rows)
            position = rows[-1][0] + 1
        return Timed(count, time.perf_counter() - began)


async def _verify(engine: AsyncEngine, signer: TreeSigner) -> tuple[Timed, Any]:
    async with engine.connect() as conn:
        began = time.perf_counter()
        result: Any = None
        async for line in verify_ledger(conn, signer):
            result = line.get("result", result)
        return Timed(result["events"], time.perf_counter() - began), result


async def verify(
    engine: AsyncEngine, signer: TreeSigner, *, expected: int, say: Say
) -> dict[str, float]:
    """Whole-ledger verify beside a raw read of the same rows, best of two each."""
    raw, checked = Timed(), Timed()
    for _ in range(2):
        read = await _raw_read(engine)
        raw = max(raw, read, key=lambda t: t.per_second if t.count else 0.0)
        timed, result = await _verify(engine, signer)
        if not result["valid"] or timed.count != expected:
            raise RuntimeError(f"verify_ledger: {timed.count} of {expected}: {result}")
        checked = max(checked, timed, key=lambda t: t.per_second if t.count else 0.0)
    say(
        f"  verify_ledger {checked.per_second:,.0f} rows/s (valid), raw read "
        f"{raw.per_second:,.0f} rows/s"
    )
    return {
        "verify_rows_per_s": checked.per_second,
        "raw_read_rows_per_s": raw.per_second,
        "verify_vs_raw_read": _ratio(checked.per_second, raw.per_second),
    }


async def measure(
    database_url: str,
    *,
    entries: int = 100_000,
    orders: int = 10_000,
    window: int = 4_000,
    batch: int = 2_000,
    seed: int = 1,
    key_path: Path | None = None,
    say: Say = print,
) -> dict[str, float]:
    """Append and verify figures with their raw baselines (see the module doc).

    `database_url`: a migrated database with an empty ledger, as a role that may
    create the baseline's schema; the appender logs in as the ledger's own role.
    """
    # Both sides of each ratio under the collector settings the services and the
    # CLI run with, so neither pays collections the other does not.
    tune_collector()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-key-") as scratch:
        signer = TreeSigner.load_or_create(key_path or Path(scratch) / "key.pem")
    stream = EventStream(entries=entries, orders=orders, window=window, seed=seed)
    settings = CommonSettings(
        database_url=url_as(database_url, SERVICE_ROLES["ledger"]),
        database_pool_size=2,
    )
    engine = create_engine(settings)
    raw = await asyncpg.connect(plain_url(database_url))
    try:
        say(f"Append: {entries:,} events, {batch:,} per transaction")
        figures = await append(engine, raw, signer, stream, batch=batch, say=say)
        say("Verify: the whole ledger")
        expected = int(figures["ledger_entries"])
        figures |= await verify(engine, signer, expected=expected, say=say)
    finally:
        await raw.close()
        await engine.dispose()
    return figures
