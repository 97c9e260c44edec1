"""Running a benchmark body on a stack that is always stopped, whatever happens.

Every benchmark starts servers (PostgreSQL, the broker, four services): Ctrl-C,
SIGTERM or an exception must never leave them running, and a failed run keeps its
home so that the logs can be read.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from rich.console import Console

from services.stack import Stack


class Terminated(Exception):
    """SIGTERM: unwind like Ctrl-C so everything gets stopped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def run_on_stack(
    body: Callable[[Stack], None],
    *,
    home: Path | None,
    keep_home: bool,
    prefix: str,
    console: Console,
) -> int:
    """Run `body` on a stack in `home` (a fresh temporary one if None); exit code.

    0 when `body` returned, 130 when interrupted, 1 when it raised (the home is
    then kept). The stack is stopped in every case.
    """
    signal.signal(signal.SIGTERM, _terminate)
    created = home is None
    where = Path(tempfile.mkdtemp(prefix=prefix)) if home is None else home.resolve()
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
