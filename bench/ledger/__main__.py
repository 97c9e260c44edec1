"""`python -m bench.ledger`: ledger append vs raw COPY, verify vs raw read.

On a fresh database (an embedded PostgreSQL in a temporary directory, or a new
database on `--database-url`'s server), removed at the end, also on Ctrl-C or
SIGTERM. Prints every figure and the ratios against the targets; `--json` writes
them, `--profile DIR` samples the run with py-spy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Final

from rich.console import Console

from bench.database import BenchDatabase
from bench.harness import measure_cpu, run_on_database
from bench.ledger.phases import measure
from bench.ledger.profile import py_spy, summarise

console: Final = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
# Issue 12, item 4: each ratio's floor.
TARGETS: Final = {"ledger_append_vs_copy": 0.5, "verify_vs_raw_read": 0.7}


def say(text: str) -> None:
    console.print(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=4_000, help="orders open at once")
    parser.add_argument("--batch", type=int, default=2_000, help="events a transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database-url",
        default=None,
        help="create the database on this server (needs CREATEDB); "
        "default: an embedded PostgreSQL",
    )
    parser.add_argument("--no-fsync", action="store_true", help="embedded, no fsync")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a ratio misses its target"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}

    async def body(db: BenchDatabase, home: Path) -> None:
        spy = None if args.profile is None else args.profile / "ledger.txt"
        with measure_cpu(cpu, "run", db, say), py_spy(spy, say):
            figures.update(
                await measure(
                    db.url,
                    entries=args.entries,
                    orders=args.orders,
                    window=args.window,
                    batch=args.batch,
                    seed=args.seed,
                    key_path=home / "ledger-signing-key.pem",
                    say=say,
                )
            )
        if spy is not None:
            summarise(spy, say)

    code = run_on_database(
        body,
        name="ledger",
        server_url=args.database_url,
        fsync=not args.no_fsync,
        keep=args.keep,
        say=say,
        console=console,
    )
    missed = [k for k, floor in TARGETS.items() if not figures.get(k, 0.0) >= floor]
    for key, value in figures.items():
        target = f"  (target >= {TARGETS[key]:.0%})" if key in TARGETS else ""
        shown = f"{value:.2f}" if key in TARGETS else f"{value:,.0f}"
        say(f"{key:>24} {shown}{target}")
    say(f"{'load average':>24} {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json is not None:
        args.json.write_text(json.dumps({**figures, "cpu_percent": cpu}, indent=2))
    if code == 0 and args.check and missed:
        say(f"[red]missed: {', '.join(missed)}[/red]")
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
