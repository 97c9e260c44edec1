"""What checking records against the event store costs the ledger, per batch.

`python -m bench.ledger.store_check [--entries 200000] [--batch 2000]`: stores the
stream's events in `event_store.order_event` (COPY), then per batch of records as
the ledger's consumer receives them, on the service's engine:
`match_stored` (the check: id lookup and digest comparison, as the consumer calls
it), and beside it the id lookup alone, so the comparison's share shows. Compare
with the append figure of `python -m bench.ledger` (target: a 2,000-event batch in
200 ms).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import asyncpg
from rich.console import Console
from sqlalchemy import text

from bench.database import BenchDatabase
from bench.event_store import store_envelopes
from bench.harness import run_on_database
from bench.ingest.cluster import plain_url
from bench.ingest.stats import Distribution
from bench.ledger.events import EventStream, Record, consumed
from services.ledger.settings import LedgerSettings
from shared.db.engine import create_engine, driver_of
from shared.db.event_store import match_stored

console = Console()
# The check's query without the envelope comparison: the index lookups alone.
LOOKUP_ONLY = text(
    "SELECT e.order_id, e.version FROM unnest(CAST(:ids AS uuid[])) AS r(event_id) "
    "LEFT JOIN event_store.order_event AS e ON e.event_id = r.event_id"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger.store_check")
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None)
    return parser.parse_args(argv)


async def measure(args: argparse.Namespace, db: BenchDatabase, home: Path) -> None:
    stream = EventStream(
        entries=args.entries, orders=args.orders, window=args.window, seed=args.seed
    )
    batches: list[list[Record]] = []
    while rows := stream.take(args.batch):
        batches.append(rows)
    conn = await asyncpg.connect(plain_url(db.url))
    try:
        began = time.perf_counter()
        await store_envelopes(conn, (r.value for batch in batches for r in batch))
        console.print(
            f"{args.entries:,} events stored in {time.perf_counter() - began:.1f} s"
        )
    finally:
        await conn.close()
    settings = LedgerSettings(database_url=db.url)
    engine = create_engine(settings)
    check_ms: list[float] = []
    lookup_ms: list[float] = []
    offset = 0
    try:
        for batch in batches:
            events = consumed(batch, offset)
            offset += len(batch)
            ids = [e.header.event_id for e in events]
            async with engine.begin() as conn_:
                t0 = time.perf_counter()
                matches = await match_stored(
                    await driver_of(conn_),
                    [(e.header.event_id, bytes(e.record.value)) for e in events],
                )
                t1 = time.perf_counter()
                await conn_.execute(LOOKUP_ONLY, {"ids": ids})
                t2 = time.perf_counter()
            assert all(m is not None and m.same_envelope for m in matches)
            check_ms.append((t1 - t0) * 1000)
            lookup_ms.append((t2 - t1) * 1000)
    finally:
        await engine.dispose()
    check, lookup = Distribution.of(check_ms), Distribution.of(lookup_ms)
    console.print(f"batches of {args.batch}, over {args.entries:,} stored events")
    console.print(f"  store check (match_stored): {check.describe()}")
    console.print(f"  id lookup alone:            {lookup.describe()}")
    console.print(
        f"  check: {sum(check_ms) * 1000 / offset:.1f} us per record, "
        f"{sum(check_ms) / len(check_ms) / 200:.0%} of a 200 ms append batch"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_on_database(
        lambda db, home: measure(args, db, home),
        name="store_check",
        server_url=args.database_url,
        fsync=True,
        keep=False,
        say=console.print,
        console=console,
    )


if __name__ == "__main__":
    sys.exit(main())
