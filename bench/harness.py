"""Running a benchmark body on a stack that is always stopped, whatever happens.

Every benchmark starts servers (PostgreSQL, the broker, four services): Ctrl-C,
SIGTERM or an exception must never leave them running, and a failed run keeps its
home so that the logs can be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from bench.database import BenchDatabase
from bench.ingest.cluster import CpuMeter
from services.stack import Stack


class Terminated(Exception):
    """SIGTERM: unwind like Ctrl-C so everything gets stopped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def stop_on_sigterm() -> None:
    """SIGTERM raises Terminated, so `finally` blocks stop what was started."""
    signal.signal(signal.SIGTERM, _terminate)


def event_loop_runner() -> asyncio.Runner:
    """uvloop when installed, like the services under uvicorn."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


@contextlib.contextmanager
def measure_cpu(
    into: dict[str, dict[str, float]],
    phase: str,
    db: BenchDatabase,
    say: Callable[[str], None],
) -> Iterator[None]:
    """CPU of this process, of PostgreSQL (if embedded) and of everything else,
    as % of one core, stored in `into[phase]` and printed."""
    roots = {"benchmark": os.getpid()}
    if (postmaster := db.postmaster_pid) is not None:
        roots["postgres"] = postmaster
    meter = CpuMeter(roots)
    meter.start()
    try:
        yield
    finally:
        into[phase] = meter.stop()
        shares = sorted(into[phase].items(), key=lambda item: -item[1])
        say(
            f"  CPU during {phase} (% of one core): "
            + ", ".join(f"{name} {share:.0f}%" for name, share in shares)
        )


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    """--home and --keep-home, for `run_on_stack`."""
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="stack home (default: a fresh temporary directory, removed afterwards)",
    )
    parser.add_argument(
        "--keep-home", action="store_true", help="keep the temporary home and logs"
    )


def run_on_stack(
    body: Callable[[Stack], None], args: argparse.Namespace, *, console: Console
) -> int:
    """Run `body` on a stack in `args.home` (a fresh temporary one if None).

    Returns the exit code: 0 when `body` returned, 130 when interrupted, 1 when it
    raised (the home is then kept, as with `args.keep_home`). The stack is stopped
    in every case.
    """
    stop_on_sigterm()
    home: Path | None = args.home
    keep_home: bool = args.keep_home
    created = home is None
    where = (
        Path(tempfile.mkdtemp(prefix="servicetrail-bench-"))
        if home is None
        else home.resolve()
    )
    stack = Stack.from_environment(where)
    code = 0
    try:
        body(stack)
    except (KeyboardInterrupt, Terminated):
        console.print("[yellow]Interrupted; stopping everything[/yellow]")
        code = 130
    except Exception:
        console.print_exception()
        console.print(f"[red]The benchmark failed; logs are in {where}[/red]")
        keep_home = True
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # leave servers running
        console.print("Stopping the stack ...")
        stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if created and not keep_home:
            shutil.rmtree(where, ignore_errors=True)
        elif created:
            console.print(f"Home kept: {where}")
    return code


def run_on_database(
    measure: Callable[[BenchDatabase, Path], Coroutine[Any, Any, None]],
    *,
    name: str,
    server_url: str | None,
    fsync: bool,
    keep: bool,
    say: Callable[[str], None],
    console: Console,
) -> int:
    """Run `measure(db, home)` on a fresh database; exit code as `run_on_stack`.

    The database (embedded in a temporary home, or a new one on `server_url`) is
    removed in every case unless `keep`.
    """
    stop_on_sigterm()
    home = Path(tempfile.mkdtemp(prefix=f"servicetrail-bench-{name}-"))
    db = BenchDatabase(
        server_url=server_url,
        fsync=fsync,
        home=home,
        keep=keep,
        prefix=f"bench_{name}_",
    )
    code = 0
    try:
        began = time.perf_counter()
        say(f"Starting the database in {home} ...")
        db.start()
        say(f"  ready in {time.perf_counter() - began:.1f} s: {db.description}")
        with event_loop_runner() as runner:
            runner.run(measure(db, home))
    except (KeyboardInterrupt, Terminated):
        say("[yellow]Interrupted; cleaning up[/yellow]")
        code = 130
    except Exception:
        console.print_exception()
        say("[red]The benchmark failed[/red]")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # leave the server running
        try:
            db.stop()
        except Exception as err:
            say(f"[red]Could not remove the database: {err}[/red]")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if keep:
            say(f"Kept: {home}" + (f", database {db.name}" if db.name else ""))
        else:
            shutil.rmtree(home, ignore_errors=True)
    return code
