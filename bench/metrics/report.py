"""Printing: per-phase lines, the statement breakdown and the final table."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from bench.ingest.cluster import OTHERS
from bench.ingest.report import SHARED_MACHINE_PERCENT
from bench.metrics.figures import (
    TARGET_APPLY_EPS,
    TARGET_MEMORY_GROWTH_MB,
    TARGET_QUERY_P99_MS,
    ApplyFigures,
    Results,
    ServiceFigures,
)
from bench.timing import Timed, rate

# Piped output (CI logs, `tee`) would otherwise wrap the table at 80 columns.
console: Final = Console(highlight=False, width=None if sys.stdout.isatty() else 130)


def say(text: str) -> None:
    console.print(text)


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(asdict(results), indent=2, default=str))


def write_plans(results: Results, path: Path) -> None:
    path.write_text(
        "\n\n".join(f"-- {p.query} / {p.statement}\n{p.text}" for p in results.plans)
        + "\n"
    )


def _eps(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f} events/s"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f} ms"


def _mb(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f} MB"


def _us(timed: Timed) -> str:
    if not timed.count:
        return "-"
    return f"{timed.us_each:,.1f} µs each = {timed.per_second:,.0f}/s on one core"


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def statement_rows(figures: ApplyFigures) -> list[tuple[str, int, float]]:
    """(part, calls, seconds) of the apply transactions, summing to their time:
    each statement as asyncpg timed it, and what lies between them."""
    timed = figures.statements
    begin = timed.get("BEGIN", Timed())
    commit = timed.get("COMMIT", Timed())
    in_apply = [
        (kind, t.count, t.seconds)
        for kind, t in sorted(timed.items(), key=lambda i: -i[1].seconds)
        if kind not in ("BEGIN", "COMMIT")
    ]
    around = (
        figures.applied.seconds - figures.begin.seconds - figures.apply_call.seconds
    )
    return [
        *in_apply,
        (
            "Python in apply(): fold, JSON parse and dump, row arrays",
            0,
            figures.apply_call.seconds - sum(s for _, _, s in in_apply),
        ),
        ("BEGIN", begin.count, begin.seconds),
        (
            "SELECT 1 through SQLAlchemy (starts the transaction)",
            0,
            figures.begin.seconds - begin.seconds,
        ),
        ("COMMIT", commit.count, commit.seconds),
        (
            "SQLAlchemy: pool checkout and release, COMMIT's wrapper",
            0,
            around - commit.seconds,
        ),
    ]


def print_statements(figures: ApplyFigures) -> None:
    """Where a batch's time goes, statement by statement."""
    total = figures.applied.seconds
    batches = max(figures.batch_ms.count if figures.batch_ms is not None else 0, 1)
    table = Table(title="Inside the apply transactions (asyncpg's query logger)")
    table.add_column("part")
    table.add_column("calls per batch", justify="right")
    table.add_column("ms per batch", justify="right")
    table.add_column("share", justify="right")
    for part, calls, seconds in statement_rows(figures):
        table.add_row(
            part,
            f"{calls / batches:.2f}" if calls else "",
            f"{1000 * seconds / batches:,.2f}",
            f"{seconds / total:.1%}" if total else "-",
        )
    table.add_row("the whole transaction", "", f"{1000 * total / batches:,.2f}", "")
    console.print(table)


def memory_growth(a: ApplyFigures, start: int) -> tuple[int, int, float] | None:
    """(from events, to events, MB) between the point at `start` and the end."""
    first = a.memory_at(start)
    last = a.memory[-1] if a.memory else None
    if first is None or last is None or last.events <= first.events:
        return None
    return first.events, last.events, last.rss_mb - first.rss_mb


class _Rows:
    """The final table and the verdicts of the rows that have a target."""

    def __init__(self, title: str) -> None:
        self.table = Table(title=title)
        self.table.add_column("figure")
        self.table.add_column("measured", justify="right")
        self.table.add_column("target", justify="right")
        self.table.add_column("")
        self.verdicts: list[bool] = []

    def add(
        self, name: str, measured: str, target: str = "", ok: bool | None = None
    ) -> None:
        if ok is not None:
            self.verdicts.append(ok)
        self.table.add_row(name, measured, target, _verdict(ok))


def summary(results: Results, *, memory_from: int) -> tuple[Table, bool]:
    """The final table and whether every measured target was met."""
    title = (
        f"Metrics benchmark: {results.events_requested:,} events requested, "
        f"batches of {results.batch:,}; {results.database}"
        + ("; profiled with py-spy" if results.profiled else "")
    )
    rows = _Rows(title)
    table, row = rows.table, rows.add

    cpu = results.cpu
    if (a := results.apply) is not None:
        row(
            f"apply: IndicatorProjector.apply, {a.applied.count:,} events over "
            f"{a.orders:,} orders in {a.applied.seconds:,.0f} s of transactions",
            _eps(a.applied.per_second),
            f">= {TARGET_APPLY_EPS:,.0f} events/s",
            a.applied.per_second >= TARGET_APPLY_EPS,
        )
        if a.segments:
            last = a.segments[-1]
            row(
                f"  over the last {last.count:,} (events {last.first:,}..)",
                _eps(last.per_second),
                f">= {TARGET_APPLY_EPS:,.0f} events/s",
                last.per_second >= TARGET_APPLY_EPS,
            )
            first = a.segments[0]
            row(f"  over the first {first.count:,}", _eps(first.per_second))
        row(
            "  this process's CPU in the transactions (one-core ceiling)",
            f"{a.applied_cpu.seconds / max(a.applied.seconds, 1e-9):.0%} of wall; "
            + _us(a.applied_cpu),
        )
        if a.batch_ms is not None:
            row(
                "  transaction per batch p50 / p99 / max",
                f"{_ms(a.batch_ms.p50)} / {_ms(a.batch_ms.p99)} / {_ms(a.batch_ms.max)}",
            )
        growth = memory_growth(a, memory_from)
        if growth is not None:
            start, end, mb = growth
            row(
                f"memory: RSS growth of the applying process, {start:,} -> "
                f"{end:,} events",
                f"{mb:+,.1f} MB",
                f"< {TARGET_MEMORY_GROWTH_MB:.0f} MB",
                mb < TARGET_MEMORY_GROWTH_MB,
            )
        else:
            row(
                f"memory: RSS growth from {memory_from:,} events",
                "[yellow]not reached[/yellow]",
                f"< {TARGET_MEMORY_GROWTH_MB:.0f} MB",
            )
        shown = {0, memory_from, a.memory[-1].events if a.memory else 0}
        for m in (m for m in a.memory if m.events in shown):
            row(
                f"  RSS after {m.events:,} events",
                f"{_mb(m.rss_mb)} ({m.python_objects:,} objects)",
            )
        row("cpu: OrderFacts.model_validate_json(stored)", _us(cpu.model_validate))
        row("cpu: apply_event (pure fold, in memory)", _us(cpu.apply_event))
        row("cpu: OrderFacts.model_dump_json(stored fields)", _us(cpu.model_dump_json))
        row("cpu: fact_row (order_fact's columns)", _us(cpu.fact_row))
        row(
            f"stream: {a.ratings:,} ratings, {a.complaints:,} complaints, "
            f"{a.late_events:,} late events",
            f"window {a.window:,} open orders",
        )
        row(
            "load wall time (incl. generating events)",
            f"{a.wall_seconds:,.0f} s (generating {_eps(a.generate.per_second)})",
        )
        if a.stopped_early:
            row("[yellow]load stopped at --time-limit[/yellow]", "")
    for q in results.queries:
        if q.error:
            row(f"query: {q.name}", f"[red]{q.error[:60]}[/red]", "", False)
            continue
        row(
            f"query p99: {q.name}",
            _ms(q.ms.p99),
            f"< {TARGET_QUERY_P99_MS:.0f} ms",
            q.ms.p99 < TARGET_QUERY_P99_MS,
        )
        row(
            f"  p50 / max (n={q.calls})"
            + (" [yellow]time limit[/yellow]" if q.stopped_early else ""),
            f"{_ms(q.ms.p50)} / {_ms(q.ms.max)}",
        )
    for p in results.plans:
        if p.query.startswith("get_indicators window=all") and "region" not in p.query:
            row(
                f"  plan: {p.statement}",
                f"{p.execution_ms:,.1f} ms: {'; '.join(s.split(' (')[0] for s in p.scans)[:70]}",
            )
    if (s := results.service) is not None:
        _service_rows(rows, s)
    if results.table_sizes_mb:
        row(
            "metrics tables on disk",
            ", ".join(
                f"{k} {v:,.0f} MB" for k, v in results.table_sizes_mb.items() if v >= 1
            ),
        )
    for phase, cpu_use in results.cpu_percent.items():
        row(
            f"CPU during {phase} (% of one core)",
            ", ".join(
                f"{k} {v:.0f}%" for k, v in sorted(cpu_use.items(), key=lambda i: -i[1])
            ),
        )
        if cpu_use.get(OTHERS, 0.0) >= SHARED_MACHINE_PERCENT:
            table.add_row(
                f"[yellow]  other processes took {cpu_use[OTHERS]:.0f}% of a core "
                f"during {phase}[/yellow]",
                "",
                "",
                "[yellow]shared machine: figures pessimistic[/yellow]",
            )
    for note in results.notes:
        table.add_row(f"[yellow]{note}[/yellow]", "", "", "")
    return table, all(rows.verdicts)


def _service_rows(rows: _Rows, s: ServiceFigures) -> None:
    row = rows.add
    if s.error and not s.applied:
        row("service: python -m services.metrics", f"[red]{s.error[:70]}[/red]")
        return
    row(
        f"service: python -m services.metrics via Kafka, {s.applied:,} of "
        f"{s.events:,} events",
        _eps(rate(s.applied, s.seconds_from_start)),
        f">= {TARGET_APPLY_EPS:,.0f} events/s",
        rate(s.applied, s.seconds_from_start) >= TARGET_APPLY_EPS,
    )
    if s.rss_points:
        first_applied, _ = s.rss_points[0]
        end_applied, end_rss = s.rss_points[-1]
        row(
            f"  service RSS: ready {_mb(s.rss_start_mb)}, after {first_applied:,} "
            f"{_mb(s.rss_points[0][1])}, after {end_applied:,} {_mb(end_rss)}",
            f"{end_rss - s.rss_points[0][1]:+,.1f} MB",
            f"< {TARGET_MEMORY_GROWTH_MB:.0f} MB",
            end_rss - s.rss_points[0][1] < TARGET_MEMORY_GROWTH_MB,
        )
        row("  service RSS peak", _mb(s.rss_peak_mb))
    row(
        "  the consumer kept making progress",
        "[red]stuck[/red]" if s.stalled else "yes",
        "no stall",
        not s.stalled,
    )
    if s.log_excerpt:
        line = s.log_excerpt.splitlines()[-1]
        row(f"  service log: {line.split(': ', 1)[-1][:160]}", "")
    if s.stopped_early:
        row("  [yellow]stopped at --service-time-limit[/yellow]", "")
    if s.cpu_percent:
        row(
            "  CPU while consuming (% of one core)",
            ", ".join(
                f"{k} {v:.0f}%"
                for k, v in sorted(s.cpu_percent.items(), key=lambda i: -i[1])
            ),
        )
