"""`python -m bench.ingest`: how fast orders get in, through the relay and to the ledger.

Starts a fresh stack (embedded PostgreSQL + Tansu unless DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS are set) in a temporary home on free loopback ports, then:

1. baseline: a bare FastAPI + asyncpg endpoint on the same PostgreSQL, closed loop;
2. intake throughput: closed loop on `POST /v1/orders` from a separate process;
3. end-to-end lag: open loop at --rate; ledger appended_at - recorded_at per order;
4. relay catch-up: one backlog through the relay, a bare producer and the ledger,
   each alone (`bench.ingest.relay`).

Everything it started is stopped at the end, also on Ctrl-C, SIGTERM or an error;
`--json FILE` writes the headline ratios (`Results.figures`) and every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import add_stack_options, run_on_stack
from bench.ingest import phases
from bench.ingest.cluster import (
    CONSUMERS,
    LOOPBACK,
    ManagedProcess,
    child_environment,
    paused,
    plain_url,
    python_module,
    service_pid,
    stack_processes,
    start_infrastructure,
    start_services,
    wait_for_http,
)
from bench.ingest.ledger_append import ledger_append
from bench.ingest.post_cost import measure_post_cost
from bench.ingest.relay import relay_catch_up
from bench.ingest.report import (
    Results,
    console,
    print_lag,
    print_profile,
    print_relay,
    print_throughput,
    say,
    summary,
)
from services.stack import Stack
from services.stack.servers import free_port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Intake throughput, end-to-end lag and relay catch-up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per throughput phase"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds before measuring"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="closed-loop connections"
    )
    parser.add_argument(
        "--rate", type=float, default=500.0, help="orders/s of the open-loop lag phase"
    )
    parser.add_argument(
        "--lag-duration", type=float, default=10.0, help="seconds of the lag phase"
    )
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="outbox rows for the relay phase"
    )
    add_stack_options(parser)
    parser.add_argument(
        "--consumers-running",
        action="store_true",
        help="leave dispatch, ledger and metrics running during the throughput "
        "phases (by default they are paused: in production they run elsewhere)",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--skip-post-cost", action="store_true")
    parser.add_argument("--skip-ledger-append", action="store_true")
    parser.add_argument(
        "--ledger-entries",
        type=int,
        default=50_000,
        help="entries of the ledger-append phase (a fresh database on the stack's server)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy intake during the throughput phase (collapsed stacks to FILE)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the relay and ledger to catch up between phases",
    )
    parser.add_argument(
        "--relay-timeout", type=float, default=300.0, help="limit of the relay phase"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write all figures"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def consumers_paused(args: argparse.Namespace, stack: Stack) -> Iterator[None]:
    """The downstream consumers SIGSTOPped for a throughput phase, then caught up.

    In production they run on other machines; on a 2-core box they would take
    40-70% of a core from intake, which the bare baseline never pays.
    """
    if args.consumers_running:
        say("  consumers running (--consumers-running): they share the cores")
        yield
        return
    pids = {name: pid for name in CONSUMERS if (pid := service_pid(stack, name))}
    say(f"  paused {', '.join(pids)} (SIGSTOP) for this phase; resumed after it")
    try:
        with paused(pids):
            yield
    finally:
        assert stack.database_url is not None
        phases.quiesce(stack.database_url, timeout=args.settle_timeout, say=say)


def run(args: argparse.Namespace, stack: Stack, results: Results) -> None:
    workdir = stack.home / "bench"
    started = time.monotonic()
    say(f"Starting the stack in {stack.home} ...")
    start_infrastructure(stack)
    start_services(stack)
    assert stack.database_url is not None
    url = stack.database_url
    say(
        f"  ready in {time.monotonic() - started:.1f} s: PostgreSQL {url}, "
        f"Kafka {stack.kafka_bootstrap}, "
        + ", ".join(f"{n} {s.url}" for n, s in stack.services.items())
    )
    tokens = phases.customer_tokens(stack.home)

    if not args.skip_baseline:
        say("[bold]Baseline[/bold]: bare FastAPI + asyncpg, two INSERTs per request")
        port = free_port(LOOPBACK)
        baseline = ManagedProcess(
            python_module(
                "bench.ingest.baseline",
                "--port",
                str(port),
                "--database-url",
                plain_url(url),
            ),
            log=stack.home / "baseline.log",
            env=child_environment(),
        )
        try:
            baseline.start()
            wait_for_http(
                f"http://{LOOPBACK}:{port}/healthz", timeout=30, process=baseline
            )
            assert baseline.pid is not None
            # The idle services count as ours, so "other processes" is the rest.
            roots = {"baseline": baseline.pid, **stack_processes(stack)}
            with consumers_paused(args, stack):
                results.baseline = phases.throughput(
                    phases.baseline_target(port),
                    tokens=tokens,
                    concurrency=args.concurrency,
                    duration=args.duration,
                    warmup=args.warmup,
                    workdir=workdir,
                    cpu_roots=roots,
                )
        finally:
            baseline.stop()
        print_throughput(results.baseline)

    intake = phases.Target("intake", LOOPBACK, stack.services["intake"].port)
    if not args.skip_throughput:
        say(
            f"[bold]Intake throughput[/bold]: closed loop, {args.concurrency} "
            f"connections, {args.warmup:.0f} s warm-up + {args.duration:.0f} s"
        )
        results.profiled = args.profile is not None
        with consumers_paused(args, stack):
            results.intake = phases.throughput(
                intake,
                tokens=tokens,
                concurrency=args.concurrency,
                duration=args.duration,
                warmup=args.warmup,
                workdir=workdir,
                cpu_roots=stack_processes(stack),
                profile_to=args.profile,
                profile_pid=service_pid(stack, "intake"),
            )
        print_throughput(results.intake)
        if args.profile is not None:
            say(f"  py-spy profile of intake (collapsed stacks): {args.profile}")
            print_profile(args.profile)

    if not args.skip_lag:
        say(
            f"[bold]End-to-end lag[/bold]: open loop at {args.rate:.0f} orders/s "
            f"for {args.lag_duration:.0f} s"
        )
        phases.quiesce(url, timeout=args.settle_timeout, say=say)
        results.lag = phases.lag(
            intake,
            database_url=url,
            tokens=tokens,
            rate=args.rate,
            duration=args.lag_duration,
            concurrency=args.concurrency,
            workdir=workdir,
            ledger_timeout=args.settle_timeout,
            say=say,
        )
        print_lag(results.lag)

    if not args.skip_relay:
        say(f"[bold]Relay catch-up[/bold]: {args.backlog:,} stored, unpublished events")
        phases.quiesce(url, timeout=args.settle_timeout, say=say)
        results.relay = relay_catch_up(
            stack, backlog=args.backlog, timeout=args.relay_timeout, say=say
        )
        print_relay(results.relay)
    if not args.skip_post_cost:
        say(
            "[bold]Post cost[/bold]: one event on a 2-event vs a 50-event order, "
            "interleaved on one connection"
        )
        phases.quiesce(url, timeout=args.settle_timeout, say=say)
        cost = asyncio.run(measure_post_cost(stack.services["intake"].url, tokens))
        say(
            f"  median {cost['post_cost_short_ms']:.1f} ms (2 events) vs "
            f"{cost['post_cost_long_ms']:.1f} ms (50 events)"
        )
        results.post_cost_long_vs_short = cost["post_cost_long_vs_short"]

    if not args.skip_ledger_append:
        say(
            f"[bold]Ledger append[/bold]: {args.ledger_entries:,} entries against a raw "
            "COPY of the same rows, in a fresh database on the same server"
        )
        figures = ledger_append(url, home=workdir, entries=args.ledger_entries, say=say)
        results.ledger_append_vs_copy = figures["ledger_append_vs_copy"]
        results.verify_vs_raw_read = figures["verify_vs_raw_read"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results(concurrency=args.concurrency, duration=args.duration)
    code = run_on_stack(lambda stack: run(args, stack, results), args, console=console)
    table, met = summary(results)
    console.print(table)
    if args.json is not None:
        results.write_json(args.json)
    if code == 0 and args.check and not met:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
