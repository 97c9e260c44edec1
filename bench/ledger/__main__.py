"""`python -m bench.ledger`: append rate, whole-ledger verify rate, history latency.

On a fresh database (an embedded PostgreSQL in a temporary directory, or a new
database on `--database-url`'s server):

1. append: --entries realistic order events (--orders orders, one with 100 events)
   through `LedgerAppender.handle`, one transaction per --batch, as the ledger's
   Kafka consumer drives it (minus Kafka); beside it the same rows inserted into
   plain tables (executemany and COPY) and bare hashlib over the same bytes;
2. verify: `verify_ledger` over the whole ledger, beside `iter_entries` alone,
   a bare asyncpg fetch and hashlib;
3. history: p50/p99 of `get_history` for the 100-event order, and over HTTP.

Everything it started is stopped and removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeVar

from bench.database import BenchDatabase
from bench.harness import measure_cpu, run_on_database
from bench.ledger import phases
from bench.ledger.events import EventStream
from bench.ledger.figures import Results
from bench.ledger.profile import py_spy, summarise
from bench.ledger.report import console, print_statements, say, summary, write_json
from services.ledger.signing import TreeSigner
from services.ledger.store import APPEND_ONLY_TABLES
from shared.db.engine import create_engine, driver_of
from shared.db.roles import SERVICE_ROLES, url_as
from shared.settings import CommonSettings

T = TypeVar("T")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger",
        description="Ledger append rate, whole-ledger verify rate, history latency.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="ledger entries to append"
    )
    parser.add_argument(
        "--batch", type=int, default=2000, help="events per append transaction"
    )
    parser.add_argument(
        "--orders", type=int, default=100_000, help="orders the events belong to"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=10_000,
        help="orders open at once (events of one order spread over the stream)",
    )
    parser.add_argument("--seed", type=int, default=1, help="of the event stream")
    parser.add_argument(
        "--database-url",
        default=None,
        help="use this server: a new database is created there and dropped after "
        "(needs CREATEDB); default: an embedded PostgreSQL in a temporary directory",
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="embedded server without fsync (throwaway numbers; default: fsync on)",
    )
    parser.add_argument(
        "--raw-every",
        type=int,
        default=1,
        metavar="N",
        help="insert every N-th batch's rows into the plain tables too (0: never)",
    )
    parser.add_argument(
        "--segment",
        type=int,
        default=100_000,
        help="entries per progress line (the last one is the 'last 100k' rate)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=1800.0,
        help="seconds for the append phase; the ledger loaded so far is then used",
    )
    parser.add_argument(
        "--history-calls", type=int, default=500, help="get_history calls timed"
    )
    parser.add_argument(
        "--no-http", action="store_true", help="skip the history-over-HTTP figure"
    )
    parser.add_argument("--skip-verify", action="store_true")
    parser.add_argument("--skip-history", action="store_true")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the append and verify phases (collapsed stacks into DIR)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (and temporary home)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write all figures"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    if args.batch < 1 or args.entries < 1 or args.segment < 1:
        parser.error("--entries, --batch and --segment must be positive")
    return args


async def _measure(
    args: argparse.Namespace,
    db: BenchDatabase,
    home: Path,
    stream: EventStream,
    results: Results,
) -> None:
    key_path = home / "ledger-signing-key.pem"
    signer = TreeSigner.load_or_create(key_path)
    # The service's own engine: asyncpg under SQLAlchemy, logged in as the ledger's
    # role (the bench's server trusts loopback, so no password).
    settings = CommonSettings(
        database_url=url_as(db.url, SERVICE_ROLES["ledger"]), database_pool_size=2
    )
    engine = create_engine(settings)
    try:
        say(
            f"[bold]Append[/bold]: {stream.entries:,} events through "
            f"LedgerAppender.handle, {args.batch:,} per transaction"
            + (
                f"; the same rows into plain tables every {args.raw_every} batch(es)"
                if args.raw_every
                else ""
            )
        )
        profile = args.profile
        with (
            measure_cpu(results.cpu_percent, "append", db, say),
            py_spy(None if profile is None else profile / "append.txt", say),
        ):
            results.append, samples = await phases.append(
                engine,
                signer,
                stream,
                batch=args.batch,
                database_url=db.url,
                raw_every=args.raw_every,
                time_limit=args.time_limit,
                segment=args.segment,
                say=say,
            )
        results.ledger_size = results.append.appended.count
        print_statements(results.append)
        if profile is not None:
            summarise(profile / "append.txt", say)
        say("[bold]CPU per event[/bold] (one core, sampled events)")
        phases.cpu_figures(samples, results.cpu)
        del samples

        if not args.skip_verify:
            say(f"[bold]Verify[/bold]: the whole ledger ({results.ledger_size:,})")
            with (
                measure_cpu(results.cpu_percent, "verify", db, say),
                py_spy(None if profile is None else profile / "verify.txt", say),
            ):
                results.verify = await phases.verify(
                    engine, signer, expected=results.ledger_size, cpu=results.cpu
                )
            v = results.verify
            say(
                f"  verify_ledger {v.verify.per_second:,.0f} events/s "
                f"({v.verify.seconds:.1f} s, valid={v.valid}); iter_entries alone "
                f"{v.iter_entries.per_second:,.0f}/s; fetch alone "
                f"{v.fetch_only.per_second:,.0f}/s"
            )
            for finding in v.findings:
                say(f"  [red]{finding}[/red]")
            if profile is not None:
                summarise(profile / "verify.txt", say)

        if not args.skip_history:
            say(
                f"[bold]History[/bold]: {args.history_calls} calls for the "
                f"100-event order {stream.long_order_id}"
            )
            with measure_cpu(results.cpu_percent, "history", db, say):
                results.history = await phases.history(
                    engine,
                    stream.long_order_id,
                    events=100,
                    calls=args.history_calls,
                    http_settings=None
                    if args.no_http
                    else phases.http_settings(db.url, key_path),
                )
            h = results.history
            say(f"  get_history: {h.direct_ms.describe()}")
            say(f"  order_entries alone: {h.sql_ms.describe()}")
            if h.http_ms is not None:
                say(f"  over HTTP:   {h.http_ms.describe()}")
            elif h.http_error:
                say(f"  [yellow]over HTTP failed: {h.http_error}[/yellow]")
        async with engine.connect() as conn:
            driver = await driver_of(conn)
            sizes = await driver.fetch(
                "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'ledger' AND c.relname = ANY($1::text[])",
                list(APPEND_ONLY_TABLES),
            )
        say(
            "  ledger tables on disk: "
            + ", ".join(f"{r['relname']} {r['bytes'] / 2**20:,.0f} MiB" for r in sizes)
        )
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results(
        entries_requested=args.entries,
        orders=args.orders,
        batch=args.batch,
        fsync=not args.no_fsync,
        database="",
        profiled=args.profile is not None,
    )

    async def measure(db: BenchDatabase, home: Path) -> None:
        results.database = db.description
        if args.database_url is None and not args.no_fsync:
            results.notes.append(
                "embedded PostgreSQL defaults (shared_buffers 128 MB), fsync on"
            )
        say("Building the event stream ...")
        stream = EventStream(
            entries=args.entries, orders=args.orders, window=args.window, seed=args.seed
        )
        await _measure(args, db, home, stream, results)

    code = run_on_database(
        measure,
        name="ledger",
        server_url=args.database_url,
        fsync=not args.no_fsync,
        keep=args.keep,
        say=say,
        console=console,
    )
    table, met = summary(results)
    if table.row_count:
        console.print(table)
    if args.json is not None:
        write_json(results, args.json)
    if code == 0 and args.check and not met:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
