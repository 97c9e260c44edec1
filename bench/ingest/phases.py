"""The benchmark phases: each drives load or SQL and returns its figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.ingest.cluster import (
    LOOPBACK,
    CpuMeter,
    ManagedProcess,
    child_environment,
    connected,
    python_module,
)
from bench.ingest.loadgen import ID_MARKER, LoadConfig, LoadResult
from bench.ingest.stats import (
    Distribution,
    LagFigures,
    ThroughputFigures,
)
from services.stack import jwt_secret
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.http_bodies import new_order_body

Say = Callable[[str], None]

CUSTOMERS: Final = 64
ORDERS_PATH: Final = "/v1/orders"
_UNPUBLISHED: Final = (
    "SELECT count(*) FROM event_store.outbox_message WHERE published_at IS NULL"
)
_LEDGER_BEHIND: Final = (
    "SELECT (SELECT count(*) FROM event_store.order_event)"
    " - (SELECT count(*) FROM ledger.ledger_entry)"
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a load generator sends its orders."""

    name: str
    host: str
    port: int


def customer_tokens(home: Path, count: int = CUSTOMERS) -> list[str]:
    """Bearer tokens of `count` distinct customers, valid for the stack in `home`."""
    settings = CommonSettings(jwt_secret=jwt_secret(home))
    return [
        issue_token(settings, role=Role.CUSTOMER, subject=f"bench-customer-{i}")
        for i in range(count)
    ]


def body_template() -> str:
    """A realistic order body with the id left as `ID_MARKER` for the generator."""
    return json.dumps(new_order_body(id=ID_MARKER), ensure_ascii=False)


def run_load(
    config: LoadConfig,
    workdir: Path,
    *,
    on_started: Callable[[ManagedProcess], None] | None = None,
) -> LoadResult:
    """Run the load generator as its own process and return what it measured."""
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = uuid.uuid4().hex[:8]
    config_path = workdir / f"load-{stamp}.json"
    result_path = workdir / f"result-{stamp}.json"
    config_path.write_text(config.to_json())
    process = ManagedProcess(
        python_module("bench.ingest.loadgen", str(config_path), str(result_path)),
        log=workdir / "loadgen.log",
        env=child_environment(),
    )
    timeout = config.warmup + config.duration + 2 * config.request_timeout + 30.0
    try:
        process.start()
        if on_started is not None:
            on_started(process)
        code = process.wait(timeout)
    finally:
        process.stop()
    if code != 0 or not result_path.exists():
        raise RuntimeError(
            f"the load generator failed (exit {code}); see {workdir / 'loadgen.log'}"
        )
    return LoadResult.from_json(result_path.read_text())


def throughput(
    target: Target,
    *,
    tokens: Sequence[str],
    concurrency: int,
    duration: float,
    warmup: float,
    workdir: Path,
    cpu_roots: dict[str, int],
    profile_to: Path | None = None,
    profile_pid: int | None = None,
) -> ThroughputFigures:
    """Closed-loop load on one target; CPU of `cpu_roots` measured inside the window."""
    config = LoadConfig(
        host=target.host,
        port=target.port,
        path=ORDERS_PATH,
        body_template=body_template(),
        tokens=list(tokens),
        mode="closed",
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
    )
    cpu: dict[str, float] = {}
    profiler: ManagedProcess | None = None

    def measure(process: ManagedProcess) -> None:
        nonlocal profiler
        assert process.pid is not None
        meter = CpuMeter({**cpu_roots, "load generator": process.pid})
        time.sleep(warmup + 0.5)
        if profile_to is not None and profile_pid is not None:
            profiler = start_profiler(profile_pid, profile_to, max(duration - 1.5, 1))
        meter.start()
        time.sleep(max(duration - 1.0, 0.5))
        cpu.update(meter.stop())

    try:
        result = run_load(config, workdir, on_started=measure)
    finally:
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)  # py-spy writes its output when its time is up
            profiler.stop()
    return ThroughputFigures(
        name=target.name,
        requests_per_second=result.ok / result.measured_seconds,
        latency_ms=Distribution.of(result.latencies_ms),
        errors=result.errors,
        client_cpu_percent=100.0
        * result.client_cpu_seconds
        / (result.measured_seconds + warmup),
        server_cpu_percent=cpu,
    )


def start_profiler(pid: int, output: Path, seconds: float) -> ManagedProcess | None:
    """py-spy in collapsed-stack format, if installed (not pausing the target)."""
    output.unlink(missing_ok=True)
    binary = shutil.which("py-spy")
    if binary is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    profiler = ManagedProcess(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--nonblocking",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        log=output.with_suffix(".log"),
        env=child_environment(),
    )
    profiler.start()
    return profiler


async def _wait_for(
    database_url: str,
    query: str,
    args: Sequence[Any],
    done: Callable[[int], bool],
    *,
    limit_seconds: float,
    interval: float = 0.1,
) -> tuple[bool, int]:
    async with connected(database_url) as conn:
        deadline = time.monotonic() + limit_seconds
        while True:
            value = int(await conn.fetchval(query, *args))
            if done(value):
                return True, value
            if time.monotonic() > deadline:
                return False, value
            await asyncio.sleep(interval)


def quiesce(database_url: str, *, timeout: float, say: Say) -> None:
    """Wait until the outbox is drained and the ledger holds every stored event."""
    query = f"SELECT ({_UNPUBLISHED}) + ({_LEDGER_BEHIND})"
    began = time.monotonic()
    ok, left = asyncio.run(
        _wait_for(
            database_url,
            query,
            [],
            lambda v: v <= 0,
            limit_seconds=timeout,
            interval=0.5,
        )
    )
    if ok:
        say(f"  system idle after {time.monotonic() - began:.1f} s")
    else:
        say(f"  [yellow]still {left} events in flight after {timeout:.0f} s[/yellow]")


def lag(
    target: Target,
    *,
    database_url: str,
    tokens: Sequence[str],
    rate: float,
    duration: float,
    concurrency: int,
    workdir: Path,
    ledger_timeout: float,
    say: Say,
) -> LagFigures:
    """Open loop at `rate`; then read each acknowledged order's ledger entry."""
    config = LoadConfig(
        host=target.host,
        port=target.port,
        path=ORDERS_PATH,
        body_template=body_template(),
        tokens=list(tokens),
        mode="open",
        concurrency=concurrency,
        duration=duration,
        warmup=1.0,
        rate=rate,
    )
    result = run_load(config, workdir)
    ids = [event_id for event_id, _ in result.acks]
    acked_at = dict(result.acks)
    say(f"  {len(ids)} orders acknowledged; waiting for the ledger")
    began = time.monotonic()
    ok, present = asyncio.run(
        _wait_for(
            database_url,
            "SELECT count(*) FROM ledger.ledger_entry WHERE event_id = ANY($1::uuid[])",
            [ids],
            lambda n: n >= len(ids),
            limit_seconds=ledger_timeout,
            interval=0.2,
        )
    )
    say(
        f"  ledger has {present}/{len(ids)} after {time.monotonic() - began:.1f} s"
        + ("" if ok else " [yellow](gave up waiting)[/yellow]")
    )
    rows = asyncio.run(_ledger_rows(database_url, ids))
    commit_lag = [row[1] for row in rows]
    ack_lag = [(row[2] - acked_at[row[0]]) * 1000.0 for row in rows]
    return LagFigures(
        target_rate=rate,
        achieved_rate=result.ok / result.measured_seconds,
        post_latency_ms=Distribution.of(result.latencies_ms),
        errors=result.errors,
        late_starts=result.late_starts,
        commit_to_ledger_ms=Distribution.of(commit_lag),
        ack_to_ledger_ms=Distribution.of(ack_lag),
        missing=len(ids) - len(rows),
    )


async def _ledger_rows(
    database_url: str, ids: Sequence[str]
) -> list[tuple[str, float, float]]:
    """(event id, appended_at - recorded_at in ms, appended_at epoch) per entry."""
    async with connected(database_url) as conn:
        rows = await conn.fetch(
            """
            SELECT l.event_id::text AS event_id,
                   extract(epoch FROM l.appended_at - e.recorded_at) * 1000.0 AS lag_ms,
                   extract(epoch FROM l.appended_at) AS appended
            FROM ledger.ledger_entry AS l
            JOIN event_store.order_event AS e USING (event_id)
            WHERE l.event_id = ANY($1::uuid[])
            """,
            list(ids),
        )
    return [(r["event_id"], float(r["lag_ms"]), float(r["appended"])) for r in rows]


def baseline_target(port: int) -> Target:
    return Target("baseline", LOOPBACK, port)
