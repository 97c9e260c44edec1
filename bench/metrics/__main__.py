"""`python -m bench.metrics`: apply rate, memory flatness, indicator query latency.

On a fresh database (an embedded PostgreSQL in a temporary directory, or a new
database on `--database-url`'s server):

1. apply: --events realistic order events (~10 per order, ratings and complaints
   included; see `bench/metrics/events.py`) through `IndicatorProjector.apply`,
   one transaction per --batch, as the metrics consumer drives it (minus Kafka);
   the rate overall and over the last 10 %, and where a transaction's time goes:
   each statement as asyncpg timed it, and the rest (Python: the fold, JSON);
2. memory: this process's RSS (psutil, after gc.collect()) after --memory-from
   events and at the end: per-order state lives in PostgreSQL, so it must be flat;
3. queries: p50/p99 of get_indicators (all, 24 h, a region), compute_indicators
   (the live stream's read) and get_scores on the loaded database, and EXPLAIN
   (ANALYZE, BUFFERS) of every statement they send;
4. service (unless --skip-service): `python -m services.metrics` as its own
   process, fed through an embedded Kafka-protocol broker: its consumption rate
   and RSS over --service-events (stuck: no progress for --stall-seconds).

Everything it started is stopped and removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.database import BenchDatabase
from bench.harness import measure_cpu, run_on_database
from bench.ledger.profile import py_spy, summarise
from bench.metrics import phases
from bench.metrics.events import EventStream
from bench.metrics.figures import Results
from bench.metrics.report import (
    console,
    print_statements,
    say,
    summary,
    write_json,
    write_plans,
)
from bench.metrics.service import service_phase
from shared.db.engine import create_engine
from shared.settings import CommonSettings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics",
        description="Metrics apply rate, memory flatness, indicator query latency.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events to apply")
    parser.add_argument(
        "--batch", type=int, default=2000, help="events per apply transaction"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=10_000,
        help="orders open at once (an order's events spread over the stream)",
    )
    parser.add_argument("--technicians", type=int, default=400)
    parser.add_argument(
        "--days", type=float, default=30.0, help="created times span this many days"
    )
    parser.add_argument("--seed", type=int, default=1, help="of the event stream")
    parser.add_argument(
        "--memory-from",
        type=int,
        default=100_000,
        help="RSS growth is measured from this many applied events to the end",
    )
    parser.add_argument(
        "--segment",
        type=int,
        default=0,
        help="events per progress line (default: a tenth of --events, so the last "
        "line is the last 10%%)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=3600.0,
        help="seconds for the apply phase; the database loaded so far is then used",
    )
    parser.add_argument(
        "--query-calls", type=int, default=200, help="calls timed per query"
    )
    parser.add_argument(
        "--query-time-limit", type=float, default=120.0, help="seconds per query"
    )
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-plans", action="store_true")
    parser.add_argument(
        "--plans",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the full EXPLAIN (ANALYZE, BUFFERS) text of every statement",
    )
    parser.add_argument(
        "--skip-service", action="store_true", help="no service-over-Kafka phase"
    )
    parser.add_argument(
        "--service-events",
        type=int,
        default=100_000,
        help="backlog the metrics service consumes through Kafka",
    )
    parser.add_argument(
        "--service-window",
        type=int,
        default=None,
        help="open orders in the service's stream (default: --window)",
    )
    parser.add_argument("--service-time-limit", type=float, default=600.0)
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=45.0,
        help="the service counts as stuck after this long without progress",
    )
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
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the apply phase (collapsed stacks into DIR)",
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
    if min(args.batch, args.events, args.window, args.technicians) < 1:
        parser.error("--events, --batch, --window and --technicians must be positive")
    if args.service_window is None:
        args.service_window = args.window
    if args.segment <= 0:
        args.segment = max(args.batch, args.events // 10)
    return args


async def _measure(
    args: argparse.Namespace, db: BenchDatabase, home: Path, results: Results
) -> None:
    settings = CommonSettings(database_url=db.url, database_pool_size=2)
    # The service's own engine: asyncpg under SQLAlchemy.
    engine = create_engine(settings)
    try:
        say(
            f"[bold]Apply[/bold]: {args.events:,} events through "
            f"IndicatorProjector.apply, {args.batch:,} per transaction, "
            f"{args.window:,} orders open at once"
        )
        stream = EventStream(
            total=args.events,
            window=args.window,
            technicians=args.technicians,
            days=args.days,
            seed=args.seed,
        )
        say(
            f"  {stream.mean_events_per_order:.2f} events per order on average "
            f"(~{stream.orders_expected:,} orders)"
        )
        profile = args.profile
        with (
            measure_cpu(results.cpu_percent, "apply", db, say),
            py_spy(None if profile is None else profile / "apply.txt", say),
        ):
            results.apply = await phases.apply_phase(
                engine,
                stream,
                batch=args.batch,
                time_limit=args.time_limit,
                segment=args.segment,
                memory_from=args.memory_from,
                say=say,
            )
        del stream
        print_statements(results.apply)
        if profile is not None:
            summarise(profile / "apply.txt", say)
        await phases.cpu_figures(engine, results.cpu, seed=args.seed + 7)
        results.table_sizes_mb = await phases.table_sizes(engine)

        if not args.skip_queries:
            say(
                f"[bold]Queries[/bold]: {args.query_calls} calls each "
                f"(at most {args.query_time_limit:.0f} s each)"
            )
            with measure_cpu(results.cpu_percent, "queries", db, say):
                results.queries = await phases.query_phase(
                    engine,
                    calls=args.query_calls,
                    time_limit=args.query_time_limit,
                    say=say,
                )
        if not args.skip_plans:
            say("[bold]Plans[/bold]: EXPLAIN (ANALYZE, BUFFERS) of each statement")
            results.plans = await phases.plan_phase(engine, say=say)
            if args.plans is not None:
                write_plans(results, args.plans)
                say(f"  full plans written to {args.plans}")
    finally:
        await engine.dispose()

    if not args.skip_service:
        say(
            f"[bold]Service[/bold]: python -m services.metrics consuming "
            f"{args.service_events:,} events through Kafka"
        )
        results.service = await service_phase(
            home=home,
            database_url=db.url,
            events=args.service_events,
            window=args.service_window,
            technicians=args.technicians,
            days=args.days,
            seed=args.seed + 1000,
            time_limit=args.service_time_limit,
            stall_seconds=args.stall_seconds,
            postmaster=db.postmaster_pid,
            say=say,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results(
        events_requested=args.events,
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
        await _measure(args, db, home, results)

    code = run_on_database(
        measure,
        name="metrics",
        server_url=args.database_url,
        fsync=not args.no_fsync,
        keep=args.keep,
        say=say,
        console=console,
    )
    table, met = summary(results, memory_from=args.memory_from)
    if table.row_count:
        console.print(table)
    if args.json is not None:
        write_json(results, args.json)
    if code == 0 and args.check and not met:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
