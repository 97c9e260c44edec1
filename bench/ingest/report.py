"""Printing: per-phase lines and the final table with the targets beside the figures."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from bench.ingest.cluster import OTHERS
from bench.ingest.stats import LagFigures, RelayFigures, ThroughputFigures

SHARED_MACHINE_PERCENT: Final = 20.0  # other processes' CPU worth a warning
LAG_RATE: Final = 500.0  # orders/s at which lag_p99_ms is judged
# Issue 12's targets: (key, comparison, bound); ratios against a raw baseline of the
# same run, so that they hold on machines of any speed.
TARGETS: Final = (
    ("intake_vs_baseline", ">=", 0.60),
    ("intake_p99_vs_baseline", "<=", 2.0),
    ("post_cost_long_vs_short", "<=", 1.2),
    ("lag_p99_ms", "<", 250.0),
    ("lag_rate", ">=", 0.95),
    ("relay_vs_raw_drain", ">=", 0.70),
    ("ledger_vs_relay", ">=", 0.80),
    ("ledger_append_vs_copy", ">=", 0.50),
    ("verify_vs_raw_read", ">=", 0.70),
)

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
    # From bench/ingest/post_cost.py (post on a 50-event order / on a 2-event one)
    # and bench/ledger (append / raw COPY of the same rows; verify / raw row read).
    post_cost_long_vs_short: float | None = None
    ledger_append_vs_copy: float | None = None
    verify_vs_raw_read: float | None = None

    def figures(self) -> dict[str, float | None]:
        """The headline figures (None when their phase did not run)."""
        intake, baseline, lag, relay = self.intake, self.baseline, self.lag, self.relay
        return {
            "intake_vs_baseline": (
                intake.requests_per_second / baseline.requests_per_second
                if intake is not None and baseline is not None
                else None
            ),
            "intake_p99_vs_baseline": (
                intake.latency_ms.p99 / baseline.latency_ms.p99
                if intake is not None and baseline is not None
                else None
            ),
            "post_cost_long_vs_short": self.post_cost_long_vs_short,
            "lag_p99_ms": None if lag is None else lag.commit_to_ledger_ms.p99,
            # achieved / offered orders/s of the open loop (1.0: kept up).
            "lag_rate": None if lag is None else lag.achieved_rate / lag.target_rate,
            "relay_vs_raw_drain": (
                None
                if relay is None
                else relay.events_per_second / relay.raw_drain_events_per_second
            ),
            "ledger_vs_relay": (
                None
                if relay is None
                else relay.ledger_events_per_second / relay.events_per_second
            ),
            "ledger_append_vs_copy": self.ledger_append_vs_copy,
            "verify_vs_raw_read": self.verify_vs_raw_read,
        }

    def write_json(self, path: Path) -> None:
        document = {
            **self.figures(),
            "load_average": os.getloadavg(),
            "phases": asdict(self),
        }
        path.write_text(json.dumps(document, indent=2, default=str))


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
        f"  {figures.backlog:,} events: relay {figures.events_per_second:,.0f}/s, "
        f"raw drain {figures.raw_drain_events_per_second:,.0f}/s, ledger "
        f"{figures.ledger_events_per_second:,.0f}/s"
    )
    say(f"  CPU while relaying (% of one core): {_cpu(figures.cpu_percent)}")


def summary(results: Results) -> tuple[Table, bool]:
    """The headline figures beside their targets; whether every measured one is met."""
    table = Table(
        title=f"Ingest benchmark ({results.concurrency} connections, "
        f"{results.duration:.0f} s per throughput phase"
        + (", intake profiled with py-spy" if results.profiled else "")
        + f"; load average {os.getloadavg()[0]:.1f})"
    )
    for column in ("figure", "measured", "target", ""):
        table.add_column(column, justify="left" if column == "figure" else "right")
    met = True
    figures = results.figures()
    for key, comparison, bound in TARGETS:
        value = figures[key]
        if value is None:
            table.add_row(key, "-", f"{comparison} {bound:g}", "[dim]n/a[/dim]")
            continue
        ok = _COMPARE[comparison](value, bound)
        if key == "lag_p99_ms" and results.lag is not None:
            ok = ok and results.lag.missing == 0
            if results.lag.target_rate != LAG_RATE:
                ok = None  # judged at 500 orders/s only
        met = met and ok is not False
        verdict = {None: "[dim]n/a[/dim]", True: "[green]PASS[/green]"}.get(
            ok, "[red]FAIL[/red]"
        )
        table.add_row(key, f"{value:,.2f}", f"{comparison} {bound:g}", verdict)
    cpus = {
        "baseline": results.baseline.server_cpu_percent if results.baseline else {},
        "intake": results.intake.server_cpu_percent if results.intake else {},
        "relay": results.relay.cpu_percent if results.relay else {},
    }
    for name, cpu in cpus.items():
        if cpu.get(OTHERS, 0.0) >= SHARED_MACHINE_PERCENT:
            table.add_row(
                f"[yellow]other processes during {name}[/yellow]",
                f"[yellow]{cpu[OTHERS]:.0f}% of a core[/yellow]",
                "",
                "[yellow]figures pessimistic[/yellow]",
            )
    return table, met


_COMPARE: Final = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


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
