"""`python -m bench.soak`: hours in minutes; half the peak rate, is anything creeping?

Starts a fresh stack (embedded PostgreSQL + Tansu unless DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS are set) in a temporary home on free loopback ports, then:

1. peak: a short closed loop on `POST /v1/orders` (skipped with `--rate`);
2. soak: an open loop at half that peak for `--duration` seconds, one load-generator
   run per `--interval`, printing per interval the ingest rate achieved, the lag from
   each POST's acknowledgement to its commit in the ledger and in metrics (p50, p99),
   the same lag to a bare consumer tailing the topic (the relay's and the broker's
   share: `bench.soak.tail`) and what each consumer adds to it, the outbox backlog,
   and the resident memory of every process;
3. verdicts: memory after `--warmup` flat (growth within the limit) for the four
   services, and nothing lost: the event store, the ledger and metrics hold the same
   events, the outbox is empty and `servicetrail reconcile --dry-run` finds nothing.

The load is order creation only (as in `bench.ingest`): dispatch consumes each
`created` too and finds no technician, so all three consumers work on every event.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from bench.harness import add_stack_options, run_on_stack
from bench.ingest import phases
from bench.ingest.cluster import (
    LOOPBACK,
    stack_processes,
    start_infrastructure,
    start_services,
)
from bench.ingest.loadgen import LoadConfig, LoadResult
from bench.ingest.stats import Distribution
from bench.soak.memory import POSTGRES, Growth, MemorySampler, growth
from bench.soak.tail import TopicTail
from bench.soak.windows import (
    Accounting,
    WindowFigures,
    account,
    analyse,
    commit_timestamps_on,
    enable_commit_timestamps,
    settle,
)
from services.stack import DATABASE_NAME, SERVICE_NAMES, Stack
from services.stack.postgres import EmbeddedPostgres

# Parts whose memory must be flat. The broker keeps every record in memory by design
# (Tansu's memory storage) and PostgreSQL's shared buffers fill as its tables grow:
# their growth is reported, not judged.
JUDGED: Final = SERVICE_NAMES
# The last window's lag p99 against the first's still called flat (issue 12).
FLAT_LAG_RATIO: Final = 1.5

# One line per window is wider than bench.ingest's piped default of 110 columns.
console: Final = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def say(text: str) -> None:
    console.print(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Half the peak ingest rate for a while: lag and memory per minute.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds of the soak"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="orders/s to hold (default: half the peak measured first)",
    )
    parser.add_argument(
        "--peak-seconds", type=float, default=15.0, help="closed-loop peak measurement"
    )
    parser.add_argument(
        "--interval", type=float, default=60.0, help="seconds per printed line"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=120.0,
        help="seconds excluded from the memory verdict (at most half the duration)",
    )
    parser.add_argument(
        "--growth-mb",
        type=float,
        default=20.0,
        help="memory growth after warm-up still called flat (MB) ...",
    )
    parser.add_argument(
        "--growth-fraction",
        type=float,
        default=0.10,
        help="... or this fraction of the process's size, whichever is larger",
    )
    parser.add_argument(
        "--sample-seconds", type=float, default=2.0, help="memory sampling period"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="load-generator connections"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the consumers to catch up",
    )
    add_stack_options(parser)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless memory is flat and nothing was lost",
    )
    return parser.parse_args(argv)


@dataclass
class Soak:
    """Everything the run measured, for the final verdicts."""

    rate: float = math.nan
    peak: float | None = None
    windows: list[WindowFigures] = field(default_factory=list)
    memory: list[Growth] = field(default_factory=list)
    settled_seconds: float = math.nan
    accounting: Accounting | None = None

    @property
    def memory_flat(self) -> bool:
        return bool(self.memory) and all(
            g.flat for g in self.memory if g.name in JUDGED
        )


def start_postgres_with_commit_times(stack: Stack) -> None:
    """The embedded server, restarted once so that it records commit timestamps."""
    stack.home.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(
        stack.home / "postgres", port=None, log_file=stack.home / "postgresql.log"
    )
    stack.postgres = server
    server.start()
    asyncio.run(enable_commit_timestamps(server.url))
    server.stop()
    server.start()  # on a new free port: the URL is taken afterwards
    stack.database_url = server.create_database(DATABASE_NAME, exist_ok=True)


def _figure(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _columns(cells: Sequence[str], parts: Sequence[str]) -> str:
    widths = (5, 8, 6, 11, 15, 17, 18, 15, 6)
    head = "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=False))
    return (
        head
        + "  | "
        + " ".join(
            c.rjust(max(len(p), 6))
            for c, p in zip(cells[len(widths) :], parts, strict=True)
        )
    )


def header(parts: Sequence[str]) -> str:
    return (
        _columns(
            (
                "t s",
                "orders/s",
                "errors",
                "POST p99 ms",
                "tail p50/p99 ms",
                "ledger p50/p99 ms",
                "metrics p50/p99 ms",
                "added p99 l/m",
                "outbox",
                *parts,
            ),
            parts,
        )
        + "  (MB)"
    )


def line(window: WindowFigures, parts: Sequence[str]) -> str:
    ledger, metrics = window.lag_ms["ledger"], window.lag_ms["metrics"]
    tail, added = window.tail_lag_ms, window.added_ms
    missing = sum(window.not_visible.values())
    return _columns(
        (
            f"{window.ended_at:.0f}",
            f"{window.achieved_rate:.0f}",
            f"{sum(window.errors.values())}",
            _figure(window.post_latency_ms.p99),
            f"{_figure(tail.p50)} / {_figure(tail.p99)}",
            f"{_figure(ledger.p50)} / {_figure(ledger.p99)}",
            f"{_figure(metrics.p50)} / {_figure(metrics.p99)}",
            f"{_figure(added['ledger'].p99)} / {_figure(added['metrics'].p99)}",
            f"{window.outbox_backlog}",
            *(_figure(window.memory_mb.get(p, math.nan)) for p in parts),
        ),
        parts,
    ) + (f"  [yellow]{missing} not visible yet[/yellow]" if missing else "")


def measure_peak(stack: Stack, args: argparse.Namespace, workdir: Path) -> float:
    say(
        f"[bold]Peak[/bold]: closed loop, {args.concurrency} connections, "
        f"{args.peak_seconds:.0f} s"
    )
    figures = phases.throughput(
        phases.Target("intake", LOOPBACK, stack.services["intake"].port),
        tokens=phases.customer_tokens(stack.home),
        concurrency=args.concurrency,
        duration=args.peak_seconds,
        warmup=3.0,
        workdir=workdir,
        cpu_roots=stack_processes(stack),
    )
    say(
        f"  peak {figures.requests_per_second:,.0f} orders/s "
        f"(POST {figures.latency_ms.describe()})"
    )
    return figures.requests_per_second


def soak(stack: Stack, args: argparse.Namespace, result: Soak, workdir: Path) -> None:
    """The open loop, window after window; each analysed while the next one runs."""
    assert stack.database_url is not None
    assert stack.kafka_bootstrap is not None
    url = stack.database_url
    tail = TopicTail(stack.kafka_bootstrap)
    tokens = phases.customer_tokens(stack.home)
    intake_port = stack.services["intake"].port
    windows = max(1, math.ceil(args.duration / args.interval))
    sampler = MemorySampler(stack_processes(stack), args.sample_seconds)
    parts = [*SERVICE_NAMES, "broker", POSTGRES]

    def load(seconds: float) -> LoadResult:
        return phases.run_load(
            LoadConfig(
                host=LOOPBACK,
                port=intake_port,
                path=phases.ORDERS_PATH,
                body_template=phases.body_template(),
                tokens=tokens,
                mode="open",
                concurrency=args.concurrency,
                duration=seconds,
                rate=result.rate,
            ),
            workdir,
        )

    def report(index: int, load_result: LoadResult, start: float, end: float) -> None:
        window = asyncio.run(
            analyse(
                url,
                load_result,
                index=index,
                ended_at=end,
                target_rate=result.rate,
                # The last window has no next one to overlap with: wait longer.
                limit_seconds=(
                    args.settle_timeout
                    if index == windows - 1
                    else min(30.0, args.interval / 2)
                ),
                memory_mb=sampler.between(start, end),
                tail_received_at=tail.received_at,
            )
        )
        result.windows.append(window)
        say(line(window, parts))

    say(
        f"[bold]Soak[/bold]: {result.rate:,.0f} orders/s for {args.duration:.0f} s; "
        f"lag = client ack -> commit in the ledger / in metrics, or receipt by a bare "
        f"consumer tailing the topic (tail); added = commit - the tail's receipt, per "
        f"event; memory: RSS (PostgreSQL: PSS of all its processes), median over the "
        f"{args.interval:.0f} s"
    )
    say(header(parts))
    tail.start()
    sampler.start()
    began = time.monotonic()
    previous: tuple[int, LoadResult, float, float] | None = None
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            for index in range(windows):
                seconds = min(args.interval, args.duration - index * args.interval)
                start = time.monotonic() - began
                running: Future[LoadResult] = pool.submit(load, seconds)
                if previous is not None:
                    report(*previous)
                previous = (index, running.result(), start, time.monotonic() - began)
        assert previous is not None
        report(*previous)
        say("Waiting for the consumers to catch up ...")
        result.settled_seconds = asyncio.run(
            settle(url, limit_seconds=args.settle_timeout)
        )
    finally:
        sampler.stop()
        tail.stop()
    end = previous[3]
    warmup = min(args.warmup, args.duration / 2)
    result.memory = growth(
        sampler.samples,
        warmup=warmup,
        end=end,
        # Compare the first and last minute after warm-up, or quarters of a short run.
        window=min(args.interval, (end - warmup) / 4),
        limit_mb=args.growth_mb,
        limit_fraction=args.growth_fraction,
    )
    result.accounting = account(url)


def summary(result: Soak, warmup: float) -> Table:
    table = Table(
        title=f"Memory after the {warmup:.0f} s warm-up: median of the first and the "
        "last window, slope over all samples"
    )
    for column in ("part", "early MB", "late MB", "growth MB", "MB/min", "limit MB"):
        table.add_column(column, justify="left" if column == "part" else "right")
    table.add_column("")
    for g in result.memory:
        verdict = (
            ("[green]flat[/green]" if g.flat else "[red]GROWING[/red]")
            if g.name in JUDGED
            else "[dim]reported[/dim]"
        )
        table.add_row(
            g.name,
            f"{g.early_mb:.1f}",
            f"{g.late_mb:.1f}",
            f"{g.growth_mb:+.1f}",
            f"{g.slope_mb_per_minute:+.2f}",
            f"{g.limit_mb:.0f}",
            verdict,
        )
    return table


def growth_line(
    label: str, first_window: Distribution, last_window: Distribution
) -> str:
    """The last window's p99 against the first's, judged against FLAT_LAG_RATIO."""
    first, last = first_window.p99, last_window.p99
    ratio = last / first if first > 0 else math.nan
    verdict = (
        "[green](flat: <= 1.5x)[/green]"
        if ratio <= FLAT_LAG_RATIO
        else "[red](GROWING: > 1.5x)[/red]"
    )
    return (
        f"{label}: first window {first:.0f} ms, last {last:.0f} ms = {ratio:.2f}x "
        + verdict
    )


def verdicts(result: Soak, warmup: float) -> bool:
    console.print(summary(result, warmup))
    windows = result.windows
    rates = [w.achieved_rate for w in windows]
    ledger = [w.lag_ms["ledger"].p99 for w in result.windows]
    metrics = [w.lag_ms["metrics"].p99 for w in result.windows]
    say(
        f"Ingest: target {result.rate:,.0f}/s"
        + (f" (half the peak {result.peak:,.0f}/s)" if result.peak else "")
        + f", achieved {min(rates):,.0f}..{max(rates):,.0f}/s per window; "
        f"worst p99 lag: ledger {max(ledger):.0f} ms, metrics {max(metrics):.0f} ms"
    )
    first, last = windows[0], windows[-1]
    say(
        growth_line(
            "Lag p99 tail (relay + broker)", first.tail_lag_ms, last.tail_lag_ms
        )
    )
    for consumer in ("ledger", "metrics"):
        say(
            growth_line(
                f"Lag p99 {consumer}", first.lag_ms[consumer], last.lag_ms[consumer]
            )
        )
        say(
            growth_line(
                f"  added by {consumer} (its commit - the tail's receipt)",
                first.added_ms[consumer],
                last.added_ms[consumer],
            )
        )
    say(
        "Memory: "
        + (
            "[green]flat after warm-up[/green]"
            if result.memory_flat
            else "[red]NOT flat after warm-up[/red]"
        )
        + f" ({', '.join(JUDGED)} judged)"
    )
    accounting = result.accounting
    assert accounting is not None
    reconcile = (
        f"{accounting.reconcile_missing}"
        if accounting.reconcile_missing is not None
        else f"not run ({accounting.reconcile_note})"
    )
    say(
        f"Accounting ({result.settled_seconds:.1f} s to settle): event store "
        f"{accounting.stored:,}, ledger {accounting.ledger:,}, metrics applied "
        f"{accounting.metrics_applied:,}, dispatch applied "
        f"{accounting.dispatch_applied:,}, unpublished {accounting.unpublished}, "
        f"reconcile --dry-run missing {reconcile}: "
        + (
            "[green]nothing lost[/green]"
            if accounting.nothing_lost
            else "[red]SOMETHING WAS LOST[/red]"
        )
    )
    return result.memory_flat and accounting.nothing_lost


def run(args: argparse.Namespace, stack: Stack, result: Soak) -> None:
    workdir = stack.home / "bench"
    began = time.monotonic()
    say(f"Starting the stack in {stack.home} ...")
    if stack.database_url is None:
        start_postgres_with_commit_times(stack)
    start_infrastructure(stack)
    start_services(stack)
    assert stack.database_url is not None
    if not asyncio.run(commit_timestamps_on(stack.database_url)):
        raise RuntimeError(
            "the database does not record commit timestamps; set "
            "track_commit_timestamp = on (and restart it) to measure lag"
        )
    say(
        f"  ready in {time.monotonic() - began:.1f} s: "
        + ", ".join(f"{n} {s.url}" for n, s in stack.services.items())
    )
    if args.rate is None:
        result.peak = measure_peak(stack, args, workdir)
        result.rate = result.peak / 2
        phases.quiesce(stack.database_url, timeout=args.settle_timeout, say=say)
    else:
        result.rate = args.rate
    soak(stack, args, result, workdir)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = Soak()
    code = run_on_stack(lambda stack: run(args, stack, result), args, console=console)
    if code == 0 and result.accounting is not None:
        passed = verdicts(result, min(args.warmup, args.duration / 2))
        if args.check and not passed:
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
