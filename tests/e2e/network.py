"""Helpers for the network fault tests: an order stream, lag, partitions, checks.

End-to-end lag is the age of the oldest stored event a consumer has not applied
yet (0 when it has applied everything): the figure an operator would alert on, and
the one that stays high until the whole backlog a partition built is drained.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import httpx
import psutil
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.store import ledger_entry
from shared.db.event_store import order_event
from tests.faults.proxy import FaultProxy, PartitionMode, Peer, Selector
from tests.http_bodies import new_order_body

PARTITION_SECONDS: Final = 30.0
HEAL_BUDGET_SECONDS: Final = 60.0
LAG_BOUND_SECONDS: Final = 5.0
# Four clients pausing 50 ms between orders: a steady stream (tens per second) that
# builds a backlog of a couple of thousand events over a partition.
CLIENTS: Final = 4
CLIENT_PAUSE_SECONDS: Final = 0.05


@dataclass
class OrderStream:
    """Customer apps posting orders, each retried with its id until acknowledged."""

    url: str
    headers: dict[str, str]
    acknowledged: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Post until `stop` is set, from `CLIENTS` concurrent clients."""
        async with asyncio.TaskGroup() as group:
            for _ in range(CLIENTS):
                group.create_task(self._client())

    def summary(self) -> str:
        return (
            f"{len(self.acknowledged)} orders acknowledged, statuses "
            f"{dict(self.statuses)}, {self.transport_errors} transport errors"
        )

    async def _client(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not self.stop.is_set():
                self.acknowledged.append(await self._post_until_acknowledged(client))
                await asyncio.sleep(CLIENT_PAUSE_SECONDS)

    async def _post_until_acknowledged(self, client: httpx.AsyncClient) -> str:
        body = new_order_body()
        while True:
            try:
                response = await client.post(
                    f"{self.url}/v1/orders", json=body, headers=self.headers
                )
            except httpx.TransportError:
                self.transport_errors += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code == 201:
                    return str(response.json()["event"]["id"])
                # A backing service being unreachable is a 503; anything else
                # (a 500 above all) is a bug.
                assert response.status_code == 503, response.text
                assert "Retry-After" in response.headers
            await asyncio.sleep(0.05)


async def consumer_lag(engine: AsyncEngine, schema: str) -> float:
    """Seconds since the oldest stored event the consumer in `schema` lacks was stored."""
    async with engine.connect() as conn:
        lag = await conn.scalar(
            text(
                "SELECT coalesce(extract(epoch FROM now() - min(e.recorded_at)), 0) "
                "FROM event_store.order_event e WHERE NOT EXISTS ("
                f"SELECT 1 FROM {schema}.processed_event p "
                "WHERE p.event_id = e.event_id)"
            )
        )
    return max(0.0, float(lag or 0))


@dataclass
class LagFigures:
    """Lag across one partition, in seconds; `recovered_after` counts from healing."""

    before: float = 0.0
    worst_during: float = 0.0
    at_heal: float = 0.0
    recovered_after: float | None = None
    worst_after: float = 0.0

    def line(self, label: str) -> str:
        recovered = (
            "never"
            if self.recovered_after is None
            else f"{self.recovered_after:.1f} s after healing"
        )
        return (
            f"{label}: lag before {self.before:.2f} s, worst during partition "
            f"{self.worst_during:.1f} s, at heal {self.at_heal:.1f} s, back under "
            f"{LAG_BOUND_SECONDS:.0f} s {recovered} (worst after healing "
            f"{self.worst_after:.1f} s)"
        )


async def partition_and_heal(
    proxy: FaultProxy,
    mode: PartitionMode,
    lag: Callable[[], Awaitable[float]],
    *,
    clients: Selector | None = None,
) -> LagFigures:
    """Partition for `PARTITION_SECONDS`, heal, and time the lag's way back down."""
    figures = LagFigures(before=await lag())
    if clients is None:
        proxy.partition(mode)
    else:
        proxy.partition(mode, clients)
    cut = time.monotonic()
    while time.monotonic() - cut < PARTITION_SECONDS:
        figures.worst_during = max(figures.worst_during, await lag())
        await asyncio.sleep(1.0)
    proxy.heal()
    healed = time.monotonic()
    figures.at_heal = await lag()
    while time.monotonic() - healed < HEAL_BUDGET_SECONDS:
        current = await lag()
        figures.worst_after = max(figures.worst_after, current)
        if current < LAG_BOUND_SECONDS:
            figures.recovered_after = time.monotonic() - healed
            break
        await asyncio.sleep(0.25)
    return figures


def connections_of(pid: int) -> Selector:
    """Selects the proxied connections that process `pid` opened (by client port)."""

    def selector(peer: Peer) -> bool:
        try:
            sockets = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            return False
        return any(s.laddr and (s.laddr.ip, s.laddr.port) == peer for s in sockets)

    return selector


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Show a figure in the test output even when output is captured."""
    with capsys.disabled():
        sys.stdout.write(f"\n{line}\n")


async def wait_until_applied(
    engine: AsyncEngine, schemas: tuple[str, ...], *, timeout: float
) -> None:
    """Until every consumer applied every stored event (or `timeout`; checks follow)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lags = [await consumer_lag(engine, schema) for schema in schemas]
        if not any(lags):
            return
        await asyncio.sleep(0.25)


async def assert_nothing_lost_or_doubled(
    engine: AsyncEngine, acknowledged: list[str], *, schemas: tuple[str, ...]
) -> None:
    """The ledger holds exactly the store's events, and every consumer applied them.

    Every consumer holding every stored event also means reconciliation finds
    nothing to re-publish.
    """
    async with engine.connect() as conn:
        store_ids = {
            str(i)
            for i in (await conn.execute(select(order_event.c.event_id))).scalars()
        }
        ledger_rows = (
            await conn.execute(
                select(ledger_entry.c.event_id, ledger_entry.c.position).order_by(
                    ledger_entry.c.position
                )
            )
        ).all()
        applied = {
            schema: [
                str(i)
                for i in (
                    await conn.execute(
                        text(f"SELECT event_id FROM {schema}.processed_event")
                    )
                ).scalars()
            ]
            for schema in schemas
        }
        unpublished = await conn.scalar(
            text(
                "SELECT count(*) FROM event_store.outbox_message WHERE published_at IS NULL"
            )
        )
    ledger_ids = [str(row.event_id) for row in ledger_rows]
    assert len(ledger_ids) == len(set(ledger_ids)), "an event was appended twice"
    assert set(ledger_ids) == store_ids, "the ledger differs from the event store"
    assert [row.position for row in ledger_rows] == list(range(len(ledger_rows)))
    # Every order was retried with its id until acknowledged: the store holds each
    # exactly once, and nothing else.
    assert set(acknowledged) <= store_ids, "an acknowledged event is missing"
    assert store_ids == set(acknowledged), "the store holds an unacknowledged event"
    assert len(acknowledged) == len(set(acknowledged))
    for schema, ids in applied.items():
        assert len(ids) == len(set(ids)), f"{schema} applied an event twice"
        assert set(ids) == store_ids, f"{schema} differs from the event store"
    assert unpublished == 0
