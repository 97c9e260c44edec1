"""What one window (a minute) of the soak achieved, and the end-of-run accounting.

End-to-end lag is measured from the client's acknowledgement of each POST to the
commit of the transaction that made the event visible: the ledger's append and the
metrics consumer's apply. Both commit times come from PostgreSQL itself
(`track_commit_timestamp`, turned on for the embedded server), so the poller's own
interval adds nothing and a row counts only once it is committed. Load generator and
server share one machine, hence one clock.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from bench.ingest.cluster import connected
from bench.ingest.loadgen import LoadResult
from bench.ingest.stats import Distribution

# Where each consumer records, in its own transaction, the events it applied.
VISIBLE_IN: Final = {
    "ledger": "ledger.ledger_entry",
    "metrics": "metrics.processed_event",
}
_COMMITTED_AT: Final = (
    "SELECT event_id::text, extract(epoch FROM pg_xact_commit_timestamp(xmin)) "
    "FROM {table} WHERE event_id = ANY($1::uuid[])"
)


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One window's load and the lag of the events it had acknowledged."""

    index: int
    ended_at: float  # seconds since the soak started
    seconds: float
    target_rate: float
    achieved_rate: float
    errors: dict[str, int]
    post_latency_ms: Distribution
    lag_ms: dict[str, Distribution]  # per consumer: ack -> committed there
    # ack -> received by a bare consumer tailing the topic (bench.soak.tail): the
    # relay's and the broker's share, with no consumer work in it.
    tail_lag_ms: Distribution
    # per consumer, per event: committed there - received by the tail, what the
    # consumer itself adds (an event the tail missed counts in neither).
    added_ms: dict[str, Distribution]
    not_visible: dict[str, int]  # acknowledged, still absent when we stopped waiting
    outbox_backlog: int  # unpublished rows when the window was analysed
    memory_mb: dict[str, float]


async def commit_timestamps_on(database_url: str) -> bool:
    async with connected(database_url) as conn:
        return bool(await conn.fetchval("SHOW track_commit_timestamp") == "on")


async def enable_commit_timestamps(server_url: str) -> None:
    """Ask the server to keep commit times (takes effect at its next start)."""
    async with connected(server_url) as conn:
        await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")


async def _visible_at(
    conn: asyncpg.Connection[asyncpg.Record], table: str, ids: Sequence[str]
) -> dict[str, float]:
    rows = await conn.fetch(_COMMITTED_AT.format(table=table), list(ids))
    return {row[0]: float(row[1]) for row in rows if row[1] is not None}


async def analyse(
    database_url: str,
    result: LoadResult,
    *,
    index: int,
    ended_at: float,
    target_rate: float,
    limit_seconds: float,
    memory_mb: dict[str, float],
    tail_received_at: Callable[[Sequence[str]], dict[str, float]],
) -> WindowFigures:
    """Wait (up to `limit_seconds`) until the window's events are visible everywhere."""
    acked_at = dict(result.acks)
    async with connected(database_url) as conn:
        deadline = time.monotonic() + limit_seconds
        seen: dict[str, dict[str, float]] = {name: {} for name in VISIBLE_IN}
        while True:
            for name, table in VISIBLE_IN.items():
                pending = [i for i in acked_at if i not in seen[name]]
                if pending:
                    seen[name].update(await _visible_at(conn, table, pending))
            complete = all(len(s) == len(acked_at) for s in seen.values())
            if complete or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        # By now the consumers have committed what they will: the tail, which does
        # no work per record, has received at least as much (or never will).
        tailed = tail_received_at(list(acked_at))
        backlog = int(
            await conn.fetchval(
                "SELECT count(*) FROM event_store.outbox_message "
                "WHERE published_at IS NULL"
            )
        )
    return WindowFigures(
        index=index,
        ended_at=ended_at,
        seconds=result.measured_seconds,
        target_rate=target_rate,
        achieved_rate=result.ok / result.measured_seconds,
        errors=result.errors,
        post_latency_ms=Distribution.of(result.latencies_ms),
        lag_ms={name: _lag_ms(s, acked_at) for name, s in seen.items()},
        tail_lag_ms=_lag_ms(tailed, acked_at),
        added_ms={name: _added_ms(s, tailed) for name, s in seen.items()},
        not_visible={name: len(acked_at) - len(s) for name, s in seen.items()},
        outbox_backlog=backlog,
        memory_mb=memory_mb,
    )


def _lag_ms(at: Mapping[str, float], since: Mapping[str, float]) -> Distribution:
    return Distribution.of([(t - since[i]) * 1000.0 for i, t in at.items()])


def _added_ms(
    committed: Mapping[str, float], received: Mapping[str, float]
) -> Distribution:
    return Distribution.of(
        [(t - received[i]) * 1000.0 for i, t in committed.items() if i in received]
    )


@dataclass(frozen=True, slots=True)
class Accounting:
    """Nothing lost: every stored event reached every consumer, once."""

    stored: int
    ledger: int
    metrics_applied: int
    # Dispatch finds no technician for the soak's orders but marks each event, and
    # reconcile counts what it lacks: one that lags is late, not lost.
    dispatch_applied: int
    unpublished: int
    reconcile_missing: int | None  # `servicetrail reconcile --dry-run`, if it ran
    reconcile_note: str

    @property
    def nothing_lost(self) -> bool:
        return (
            self.stored == self.ledger == self.metrics_applied == self.dispatch_applied
            and self.unpublished == 0
            and self.reconcile_missing in (0, None)
        )


async def _counts(database_url: str) -> tuple[int, int, int, int, int]:
    """Events stored, in the ledger, applied by metrics and by dispatch; unpublished."""
    async with connected(database_url) as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM event_store.order_event), "
            "(SELECT count(*) FROM ledger.ledger_entry), "
            "(SELECT count(*) FROM metrics.processed_event), "
            "(SELECT count(*) FROM dispatch.processed_event), "
            "(SELECT count(*) FROM event_store.outbox_message "
            " WHERE published_at IS NULL)"
        )
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])


async def settle(database_url: str, *, limit_seconds: float) -> float:
    """Seconds until the outbox is empty and every consumer holds every event."""
    began = time.monotonic()
    while time.monotonic() - began < limit_seconds:
        stored, ledger, metrics, dispatch, unpublished = await _counts(database_url)
        if stored == ledger == metrics == dispatch and unpublished == 0:
            return time.monotonic() - began
        await asyncio.sleep(0.5)
    return math.nan


def reconcile_dry_run(database_url: str) -> tuple[int | None, str]:
    """What the operator's repair would re-publish now (0 when nothing was lost).

    Run through the CLI, as an operator would, with no grace period: the system has
    settled, so every stored event is old enough to count.
    """
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "reconcile",
            "--dry-run",
            "--grace-seconds",
            "0",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = (completed.stdout + completed.stderr).strip()
    first = output.split()[0] if output else ""
    if completed.returncode != 0 or not first.isdigit():
        return None, output.splitlines()[-1] if output else "no output"
    return int(first), output


def account(database_url: str) -> Accounting:
    stored, ledger, metrics, dispatch, unpublished = asyncio.run(_counts(database_url))
    missing, note = reconcile_dry_run(database_url)
    return Accounting(stored, ledger, metrics, dispatch, unpublished, missing, note)
