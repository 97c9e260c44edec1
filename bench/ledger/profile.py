"""py-spy on this very process during a phase, and a summary of where time went."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def py_spy(output: Path | None, say: Callable[[str], None]) -> Iterator[None]:
    """Sample this process with py-spy (collapsed stacks to `output`) meanwhile.

    Does nothing when `output` is None or py-spy is not installed. py-spy writes its
    file on SIGINT, which is how it is stopped.
    """
    binary = shutil.which("py-spy")
    if output is None:
        yield
        return
    if binary is None:
        say("  [yellow]py-spy is not installed: no profile[/yellow]")
        yield
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    with output.with_suffix(".log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(os.getpid()),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _location(frame: str) -> tuple[str, str]:
    """`func (path/to/file.py:12)` -> (`func (file.py)` shortened, package)."""
    function, _, location = frame.rpartition(" (")
    path = location.rsplit(":", 1)[0].rstrip(")")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = "stdlib/" + path.rsplit("/lib/python3", 1)[1].split("/", 1)[-1]
    if path.startswith(("services/", "shared/", "bench/", "tests/")):
        package = path
    else:
        head, slash, _ = path.partition("/")
        package = head if slash else "(C or builtin)"
    return f"{function} ({path})", package


def summarise(
    path: Path, say: Callable[[str], None], *, top: int = 14
) -> dict[str, float]:
    """Print the project functions (inclusive) and packages (self) by share of
    samples; return the inclusive shares."""
    if not path.exists():
        say(f"  [yellow]no profile at {path}[/yellow]")
        return {}
    total = 0
    inclusive: dict[str, int] = {}
    by_package: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        _, package = _location(frames[-1])
        by_package[package] = by_package.get(package, 0) + samples
        seen: set[str] = set()
        for frame in frames:
            name, package = _location(frame)
            if package.startswith("bench/ledger/__main__"):
                continue  # the harness: always ~100 %
            if package.startswith(("services/", "shared/", "bench/")) or name.split(
                " ("
            )[0] in ("dumps", "loads", "parse_record", "execute", "executemany"):
                seen.add(name)
        for name in seen:
            inclusive[name] = inclusive.get(name, 0) + samples
    if not total:
        return {}
    say(f"  py-spy: {total:,} samples ({path})")
    say("  self time by package of the innermost frame:")
    for package, samples in sorted(by_package.items(), key=lambda i: -i[1])[:top]:
        say(f"    {samples / total:6.1%}  {package}")
    say("  functions, inclusive:")
    shares = {name: samples / total for name, samples in inclusive.items()}
    for name, share in sorted(shares.items(), key=lambda i: -i[1])[:top]:
        say(f"    {share:6.1%}  {name}")
    return shares
