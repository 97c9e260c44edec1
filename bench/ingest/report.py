"""Printing: per-phase lines and the final table with the targets beside the figures."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from bench.ingest.cluster import OTHERS
from bench.ingest.stats import LagFigures, RelayFigures, ThroughputFigures

TARGET_INTAKE_RPS: Final = 1000.0
TARGET_BASELINE_RATIO: Final = 0.40
TARGET_INTAKE_P99_MS: Final = 100.0
TARGET_LAG_P99_MS: Final = 250.0
TARGET_LAG_RATE: Final = 500.0
TARGET_RELAY_EPS: Final = 15000.0
SHARED_MACHINE_PERCENT: Final = 20.0  # other processes' CPU worth a warning

# Piped output (CI logs, `tee`) would otherwise wrap the table at 80 columns.
console: Final = Console(highlight=False, width=None if sys.stdout.isatty() else 110)


@dataclass(slots=True)
class Results:
    """Everything one run measured (absent phases stay None)."""

    concurrency: int
    duration: float
    baseline: ThroughputFigures | None = None
    intake: ThroughputFigures | None = None
    lag: LagFigures | None = None
    relay: RelayFigures | None = None
    profiled: bool = False

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, default=str))


def say(text: str) -> None:
    console.print(text)


def _errors(errors: dict[str, int]) -> str:
    if not errors:
        return "none"
    return ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()))


def _cpu(cpu: dict[str, float]) -> str:
    return ", ".join(
        f"{k} {v:.0f}%" for k, v in sorted(cpu.items(), key=lambda i: -i[1])
    )


def print_throughput(figures: ThroughputFigures) -> None:
    latency = figures.latency_ms
    say(
        f"  [bold]{figures.name}[/bold]: {figures.requests_per_second:,.0f} requests/s; "
        f"latency {latency.describe()}"
    )
    say(f"  errors by status: {_errors(figures.errors)}")
    say(
        f"  CPU (% of one core): {_cpu(figures.server_cpu_percent)}; "
        f"load generator incl. warm-up {figures.client_cpu_percent:.0f}%"
    )
    say(
        f"  {figures.name} process CPU per request: "
        f"{figures.server_cpu_ms_per_request:.2f} ms"
    )


def print_lag(figures: LagFigures) -> None:
    say(
        f"  open loop at {figures.target_rate:.0f}/s: achieved {figures.achieved_rate:.0f}/s,"
        f" errors {_errors(figures.errors)}, sent >10 ms late: {figures.late_starts}"
    )
    say(f"  POST latency (from scheduled time): {figures.post_latency_ms.describe()}")
    say(
        "  lag recorded_at -> ledger appended_at: "
        f"{figures.commit_to_ledger_ms.describe()}"
    )
    say(
        f"  lag client ack -> ledger appended_at: {figures.ack_to_ledger_ms.describe()}"
    )
    if figures.missing:
        say(
            f"  [yellow]{figures.missing} acknowledged orders not in the ledger[/yellow]"
        )


def print_relay(figures: RelayFigures) -> None:
    say(
        f"  relay: {figures.backlog:,} rows in {figures.seconds_draining:.2f} s after the "
        f"first batch = [bold]{figures.events_per_second:,.0f} events/s[/bold] "
        f"({figures.seconds_from_start:.2f} s from the intake launch incl. start-up; "
        f"{figures.seconds_in_database:.2f} s between first and last published_at)"
    )
    say(f"  CPU while draining (% of one core): {_cpu(figures.cpu_percent)}")
    if figures.ledger_events_per_second is not None:
        say(
            f"  ledger consumed the backlog {figures.ledger_seconds:.1f} s after the "
            f"intake launch = {figures.ledger_events_per_second:,.0f} events/s"
        )


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "[dim]n/a[/dim]"
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def summary(results: Results) -> tuple[Table, bool]:
    """The final table and whether every measured target was met."""
    title = (
        f"Ingest benchmark ({results.concurrency} connections, "
        f"{results.duration:.0f} s per throughput phase"
        + (", intake profiled with py-spy" if results.profiled else "")
        + ")"
    )
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    verdicts: list[bool] = []

    def row(name: str, measured: str, target: str = "", ok: bool | None = None) -> None:
        if ok is not None:
            verdicts.append(ok)
        table.add_row(name, measured, target, _verdict(ok) if target else "")

    intake, baseline = results.intake, results.baseline
    if intake is not None:
        row(
            "intake throughput",
            f"{intake.requests_per_second:,.0f} orders/s",
            f">= {TARGET_INTAKE_RPS:,.0f} orders/s",
            intake.requests_per_second >= TARGET_INTAKE_RPS,
        )
        row(
            "intake latency p99",
            _ms(intake.latency_ms.p99),
            f"< {TARGET_INTAKE_P99_MS:.0f} ms",
            intake.latency_ms.p99 < TARGET_INTAKE_P99_MS,
        )
        row(
            "intake latency p50 / max",
            f"{_ms(intake.latency_ms.p50)} / {_ms(intake.latency_ms.max)}",
        )
        row("intake errors", _errors(intake.errors), "none", not intake.errors)
        row("intake CPU per order", _ms(intake.server_cpu_ms_per_request))
    if baseline is not None:
        row(
            "baseline throughput (FastAPI + asyncpg)",
            f"{baseline.requests_per_second:,.0f} orders/s",
        )
        row(
            "baseline latency p50 / p99",
            f"{_ms(baseline.latency_ms.p50)} / {_ms(baseline.latency_ms.p99)}",
        )
        row("baseline CPU per order", _ms(baseline.server_cpu_ms_per_request))
        if baseline.errors:
            row("baseline errors", _errors(baseline.errors))
    if intake is not None and baseline is not None:
        ratio = intake.requests_per_second / baseline.requests_per_second
        row(
            "intake / baseline",
            f"{ratio:.0%}",
            f">= {TARGET_BASELINE_RATIO:.0%}",
            ratio >= TARGET_BASELINE_RATIO,
        )
        row(
            "  same, by CPU per order (robust to a busy machine)",
            f"{baseline.server_cpu_ms_per_request / intake.server_cpu_ms_per_request:.0%}",
        )
    if (lag := results.lag) is not None:
        at_rate = abs(lag.target_rate - TARGET_LAG_RATE) < 1e-9
        row(
            f"end-to-end lag p99 at {lag.achieved_rate:.0f}/s",
            _ms(lag.commit_to_ledger_ms.p99),
            f"< {TARGET_LAG_P99_MS:.0f} ms at {TARGET_LAG_RATE:.0f}/s",
            (
                lag.commit_to_ledger_ms.p99 < TARGET_LAG_P99_MS
                and lag.missing == 0
                and lag.achieved_rate >= 0.95 * lag.target_rate
            )
            if at_rate
            else None,
        )
        row(
            "end-to-end lag p50 / max",
            f"{_ms(lag.commit_to_ledger_ms.p50)} / {_ms(lag.commit_to_ledger_ms.max)}",
        )
        row(
            "ack -> ledger p50 / p99",
            f"{_ms(lag.ack_to_ledger_ms.p50)} / {_ms(lag.ack_to_ledger_ms.p99)}",
        )
        row(
            "POST latency at that rate p50 / p99",
            f"{_ms(lag.post_latency_ms.p50)} / {_ms(lag.post_latency_ms.p99)}",
        )
    if (relay := results.relay) is not None:
        row(
            f"relay catch-up ({relay.backlog:,} events)",
            f"{relay.events_per_second:,.0f} events/s",
            f">= {TARGET_RELAY_EPS:,.0f} events/s",
            relay.events_per_second >= TARGET_RELAY_EPS,
        )
        row(
            "relay catch-up incl. intake start-up",
            f"{relay.backlog / relay.seconds_from_start:,.0f} events/s",
        )
        if relay.ledger_events_per_second is not None:
            row(
                "ledger catch-up (same backlog)",
                f"{relay.ledger_events_per_second:,.0f} events/s",
            )
    for name, cpu in (
        ("baseline", baseline.server_cpu_percent if baseline else {}),
        ("intake throughput", intake.server_cpu_percent if intake else {}),
        ("relay catch-up", relay.cpu_percent if relay else {}),
    ):
        if cpu.get(OTHERS, 0.0) >= SHARED_MACHINE_PERCENT:
            table.add_row(
                f"[yellow]CPU of other processes during {name}[/yellow]",
                f"[yellow]{cpu[OTHERS]:.0f}% of a core[/yellow]",
                "",
                "[yellow]shared machine: figures pessimistic[/yellow]",
            )
    return table, all(verdicts)


def _package(frame: str) -> str:
    """`func (fastapi/routing.py:12)` -> `fastapi`; project code -> `services/...`."""
    _, _, location = frame.rpartition(" (")
    path = location.rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    if path.startswith(("services/", "shared/")):
        return "project: " + path
    head, slash, _ = path.partition("/")
    return head if slash else "python (stdlib module or C)"


def print_profile(path: Path, *, top: int = 12) -> None:
    """Intake's main thread from py-spy: own functions (inclusive), packages (self)."""
    if not path.exists():
        say(f"  [yellow]no profile at {path} (is py-spy installed?)[/yellow]")
        return
    total = 0
    inclusive: dict[str, int] = {}
    by_package: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # Worker threads (sync FastAPI dependencies) wait most of the time; the
        # event loop's thread is where requests are served.
        if not count.isdigit() or "MainThread" not in frames[0]:
            continue
        samples = int(count)
        total += samples
        leaf = _package(frames[-1])
        by_package[leaf] = by_package.get(leaf, 0) + samples
        own = {
            frame.rsplit(":", 1)[0] + ")"
            for frame in frames[1:]
            if "(services/" in frame or "(shared/" in frame
        }
        for frame in own:
            inclusive[frame] = inclusive.get(frame, 0) + samples
    if not total:
        return
    say(f"  py-spy: {total} samples of intake's event-loop thread")
    say("  where its CPU is spent (innermost frame's package):")
    for package, samples in sorted(by_package.items(), key=lambda i: -i[1])[:top]:
        say(f"    {samples / total:6.1%}  {package}")
    say("  project functions (inclusive):")
    for frame, samples in sorted(inclusive.items(), key=lambda i: -i[1])[:top]:
        say(f"    {samples / total:6.1%}  {frame}")
