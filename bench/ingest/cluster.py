"""The stack under test, on free loopback ports, and per-process CPU accounting.

`Stack.start_infrastructure()` uses fixed ports (55432, 19092) and the services default
to 8001-8004; a developer's own stack may already hold them, so the benchmark starts
the same parts on free ports instead. `Stack.stop()` still stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import psutil

from services.stack import DATABASE_NAME, Stack
from services.stack.broker import EmbeddedBroker, create_topics
from services.stack.postgres import EmbeddedPostgres
from services.stack.servers import free_port
from shared.db import migrate
from shared.events.topics import DEFAULT_PARTITIONS

LOOPBACK: Final = "127.0.0.1"
SERVICE_NAMES: Final = ("intake", "dispatch", "ledger", "metrics")
# Downstream of intake: paused during the throughput phases (see `paused`).
CONSUMERS: Final = ("dispatch", "ledger", "metrics")
OTHERS: Final = "other processes"  # CpuMeter: machine-wide busy time not ours


def plain_url(database_url: str) -> str:
    """A URL asyncpg accepts (no SQLAlchemy driver suffix)."""
    scheme, _, rest = database_url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgresql") else database_url


@contextlib.asynccontextmanager
async def connected(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection, closed afterwards."""
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        yield conn
    finally:
        await conn.close()


def start_infrastructure(stack: Stack) -> None:
    """PostgreSQL and the broker (embedded unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS
    are set, see `Stack.from_environment`), migrations and topics, on free ports.

    The caller calls `stack.stop()` in any case, also when this fails half-way.
    """
    home = stack.home
    home.mkdir(parents=True, exist_ok=True)
    if stack.database_url is None:
        stack.postgres = EmbeddedPostgres(
            home / "postgres", port=None, log_file=home / "postgresql.log"
        )
        stack.postgres.start()
        stack.database_url = stack.postgres.create_database(
            DATABASE_NAME, exist_ok=True
        )
    if stack.kafka_bootstrap is None:
        stack.broker = EmbeddedBroker(port=None, log_file=home / "broker.log")
        stack.broker.start()
        stack.kafka_bootstrap = stack.broker.bootstrap_servers
    migrate.upgrade(stack.database_url)
    asyncio.run(create_topics(stack.kafka_bootstrap, DEFAULT_PARTITIONS))


def start_services(stack: Stack) -> None:
    """The four services, each on a free port, then wait for /readyz."""
    for name in SERVICE_NAMES:
        stack.start_service(name, free_port(LOOPBACK))
    stack.wait_until_healthy()


def service_pid(stack: Stack, name: str) -> int | None:
    process = stack.services[name].process
    return None if process is None or process.poll() is not None else process.pid


def postmaster_pid(stack: Stack) -> int | None:
    """The embedded server's postmaster, if we started one."""
    if stack.postgres is None:
        return None
    try:
        first = (stack.postgres.data_dir / "postmaster.pid").read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None


def stack_processes(stack: Stack) -> dict[str, int]:
    """Root pids per part of the stack (postgres counts the postmaster's children)."""
    pids = {name: pid for name in stack.services if (pid := service_pid(stack, name))}
    if (postgres := postmaster_pid(stack)) is not None:
        pids["postgres"] = postgres
    if stack.broker is not None and stack.broker.pid is not None:
        pids["broker"] = stack.broker.pid
    return pids


@contextlib.contextmanager
def paused(roots: Mapping[str, int]) -> Iterator[None]:
    """SIGSTOP these process trees for the block; SIGCONT them afterwards, always."""
    stopped: list[psutil.Process] = []
    try:
        for pid in roots.values():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for process in (root, *root.children(recursive=True)):
                    with contextlib.suppress(psutil.Error):
                        process.suspend()
                        stopped.append(process)
        yield
    finally:
        for process in reversed(stopped):
            with contextlib.suppress(psutil.Error):
                process.resume()


class CpuMeter:
    """CPU seconds used by process trees between `start()` and `stop()`.

    Values are percent of one core (200% = both cores of a 2-core machine).
    Children (PostgreSQL backends) that exit inside the window lose their share.
    `OTHERS` is what the rest of the machine used meanwhile: a benchmark sharing
    its cores with a busy neighbour measures the neighbour too.
    """

    def __init__(self, roots: Mapping[str, int]) -> None:
        self._roots = dict(roots)
        self._before: dict[str, dict[int, float]] = {}
        self._started = 0.0
        self._machine_before = 0.0

    @staticmethod
    def _tree_times(pid: int) -> dict[int, float]:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {}
        times: dict[int, float] = {}
        for process in processes:
            try:
                cpu = process.cpu_times()
                times[process.pid] = float(cpu.user + cpu.system)
            except psutil.Error:
                continue
        return times

    @staticmethod
    def _machine_busy() -> float:
        times = psutil.cpu_times()
        return float(times.user + times.system + getattr(times, "nice", 0.0)) + float(
            getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
        )

    def start(self) -> None:
        self._started = time.monotonic()
        self._machine_before = self._machine_busy()
        self._before = {n: self._tree_times(p) for n, p in self._roots.items()}

    def stop(self) -> dict[str, float]:
        """Percent of one core per part, plus `other processes` on the machine."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        result: dict[str, float] = {}
        for name, pid in self._roots.items():
            before = self._before.get(name, {})
            after = self._tree_times(pid)
            used = sum(t - before.get(p, 0.0) for p, t in after.items())
            result[name] = 100.0 * used / elapsed
        machine = 100.0 * (self._machine_busy() - self._machine_before) / elapsed
        result[OTHERS] = max(0.0, machine - sum(result.values()))
        return result


class ManagedProcess:
    """A child process we started in its own session; always terminated by `stop()`."""

    def __init__(self, args: list[str], *, log: Path, env: Mapping[str, str]) -> None:
        self.args = args
        self._log_path = log
        self._env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def child_environment(**extra: str) -> dict[str, str]:
    env: dict[str, Any] = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    return env


def wait_for_http(url: str, *, timeout: float, process: ManagedProcess) -> None:
    """Block until `url` answers 200, or raise (also when the process died)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.process is None or process.process.poll() is not None:
                raise RuntimeError(f"{' '.join(process.args)} exited before ready")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout:.0f} s")
            time.sleep(0.1)
