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
from bench.ledger.figures import (
    TARGET_APPEND_EPS,
    TARGET_HISTORY_P99_MS,
    TARGET_VERIFY_EPS,
    AppendFigures,
    Results,
)
from bench.timing import Timed, rate

# Piped output (CI logs, `tee`) would otherwise wrap the table at 80 columns.
console: Final = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def say(text: str) -> None:
    console.print(text)


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(asdict(results), indent=2, default=str))


def _eps(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f} events/s"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} ms"


def _us(timed: Timed) -> str:
    if not timed.count:
        return "-"
    return f"{timed.us_each:,.1f} µs/event = {_eps(timed.per_second)} on one core"


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def print_statements(figures: AppendFigures) -> None:
    """Where a transaction's time goes, statement by statement."""
    total = figures.appended.seconds
    batches = figures.batch_ms.count if figures.batch_ms is not None else 0
    table = Table(title="Inside the append transactions (SQLAlchemy cursor events)")
    table.add_column("part")
    table.add_column("calls", justify="right")
    table.add_column("ms per batch", justify="right")
    table.add_column("share", justify="right")
    in_sql = 0.0
    for kind, timed in sorted(figures.statements.items(), key=lambda i: -i[1].seconds):
        in_sql += timed.seconds
        calls = (
            f"{timed.count:,} rows"
            if kind.endswith("(executemany)")
            else f"{timed.count:,}"
        )
        table.add_row(
            kind,
            calls,
            f"{1000 * timed.seconds / max(batches, 1):.2f}",
            f"{timed.seconds / total:.1%}" if total else "-",
        )
    python = figures.handle.seconds - in_sql
    for name, seconds in (
        ("handle(): Python between statements", python),
        ("COMMIT (WAL flush)", figures.commit.seconds),
        (
            "pool checkout / BEGIN",
            total - figures.handle.seconds - figures.commit.seconds,
        ),
    ):
        table.add_row(
            name,
            "",
            f"{1000 * seconds / max(batches, 1):.2f}",
            f"{seconds / total:.1%}" if total else "-",
        )
    console.print(table)


def summary(results: Results) -> tuple[Table, bool]:
    """The final table and whether every measured target was met."""
    title = (
        f"Ledger benchmark: {results.ledger_size:,} entries, {results.orders:,} "
        f"orders, batches of {results.batch:,}; {results.database}"
        + ("; profiled with py-spy" if results.profiled else "")
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
        table.add_row(name, measured, target, _verdict(ok))

    cpu = results.cpu
    if (a := results.append) is not None:
        row(
            f"append: LedgerAppender.handle, {a.appended.count:,} events "
            f"in {a.appended.seconds:,.0f} s of transactions",
            _eps(a.appended.per_second),
            f">= {TARGET_APPEND_EPS:,.0f} events/s",
            a.appended.per_second >= TARGET_APPEND_EPS,
        )
        row(
            "  this process's CPU in the transactions (one-core ceiling)",
            f"{a.appended_cpu.seconds / max(a.appended.seconds, 1e-9):.0%} of wall; "
            + _us(a.appended_cpu),
        )
        if a.segments:
            first, last = a.segments[0], a.segments[-1]
            row(
                f"  over the last {last.count:,} (entries {last.first:,}..); "
                "per CPU-second of this process",
                f"{_eps(last.per_second)}; {last.per_cpu_second:,.0f}",
            )
            row(
                f"  over the first {first.count:,}; per CPU-second",
                f"{_eps(first.per_second)}; {first.per_cpu_second:,.0f}",
            )
        if a.batch_ms is not None:
            row(
                "  transaction per batch p50 / p99 / max",
                f"{_ms(a.batch_ms.p50)} / {_ms(a.batch_ms.p99)} / {_ms(a.batch_ms.max)}",
            )
        row(
            "  one-core ceiling incl. parse_record (the consumer's work outside handle)",
            _eps(rate(a.appended.count, a.appended_cpu.seconds + a.parse.seconds)),
        )
        row(
            "raw: executemany of the same rows, plain table, same indexes",
            _eps(a.raw_executemany.per_second),
        )
        row("raw: COPY of the same rows, plain table", _eps(a.raw_copy.per_second))
        row("raw: hashlib SHA-256, 1 hash/event", _eps(cpu.sha256_once.per_second))
        row(
            "raw: hashlib, the appender's 3 hashes/event (leaf, chain, node)",
            _eps(cpu.sha256_appender.per_second),
        )
        row("cpu: canonical_from_json (RFC 8785)", _us(cpu.canonical))
        row("cpu: parse_record (pydantic Envelope + payload)", _us(a.parse))
        row(
            "load wall time (incl. generating, parsing, raw inserts)",
            f"{a.wall_seconds:,.0f} s",
        )
        if a.stopped_early:
            row("[yellow]load stopped at --time-limit[/yellow]", "")
    if (v := results.verify) is not None:
        row(
            f"verify: verify_ledger over {v.verify.count:,} entries"
            + ("" if v.valid else " [red](INVALID)[/red]"),
            _eps(v.verify.per_second),
            f">= {TARGET_VERIFY_EPS:,.0f} events/s",
            v.verify.per_second >= TARGET_VERIFY_EPS and v.valid,
        )
        row(
            "  this process's CPU in verify_ledger (one-core ceiling)",
            f"{v.verify_cpu.seconds / max(v.verify.seconds, 1e-9):.0%} of wall; "
            + _us(v.verify_cpu),
        )
        row("raw: iter_entries alone (read + Entry)", _eps(v.iter_entries.per_second))
        row("raw: asyncpg fetch alone (same SQL)", _eps(v.fetch_only.per_second))
        row("raw: hashlib SHA-256, 1 hash/event", _eps(cpu.sha256_once.per_second))
        row("cpu: LedgerAuditor.add in memory", _us(cpu.auditor_add))
    if (h := results.history) is not None:
        row(
            f"history p99: get_history, {h.events}-event order",
            _ms(h.direct_ms.p99),
            f"< {TARGET_HISTORY_P99_MS:.0f} ms",
            h.direct_ms.p99 < TARGET_HISTORY_P99_MS,
        )
        row(
            f"  p50 / max (n={h.direct_ms.count})",
            f"{_ms(h.direct_ms.p50)} / {_ms(h.direct_ms.max)}",
        )
        row(
            "  of which order_entries (SQL + Entry) p50 / p99",
            f"{_ms(h.sql_ms.p50)} / {_ms(h.sql_ms.p99)}",
        )
        if h.http_ms is not None:
            row(
                "  over HTTP (ledger app, ASGITransport) p50 / p99",
                f"{_ms(h.http_ms.p50)} / {_ms(h.http_ms.p99)}",
            )
        elif h.http_error:
            row("  over HTTP", f"[yellow]failed: {h.http_error[:60]}[/yellow]")
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
    return table, all(verdicts)
