"""`bench.ingest.cluster.paused`: the consumers stop for a phase and always resume."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from bench.ingest.cluster import paused

# A parent with a child: the whole tree is paused, as a service with workers would be.
_TREE = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "time.sleep(60)"
)


def _statuses(root: psutil.Process) -> set[str]:
    return {p.status() for p in (root, *root.children(recursive=True))}


def _stopped(root: psutil.Process, *, expected: bool) -> bool:
    """Whether the whole tree is stopped, waiting a moment for `expected` (signals
    are delivered asynchronously)."""
    until = time.monotonic() + 5
    while True:
        stopped = _statuses(root) == {psutil.STATUS_STOPPED}
        if stopped == expected or time.monotonic() > until:
            return stopped
        time.sleep(0.01)


def test_a_paused_tree_is_stopped_inside_the_block_and_runs_after_it() -> None:
    process = subprocess.Popen([sys.executable, "-c", _TREE])
    try:
        root = psutil.Process(process.pid)
        deadline = time.monotonic() + 10
        while not root.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(root.children()) == 1
        seen: list[bool] = []

        def failing_phase() -> None:
            with paused({"service": process.pid}):
                seen.append(_stopped(root, expected=True))
                raise RuntimeError("the phase failed")

        with pytest.raises(RuntimeError):
            failing_phase()
        assert seen == [True]
        assert not _stopped(root, expected=False)
        assert psutil.STATUS_STOPPED not in _statuses(root)
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()
