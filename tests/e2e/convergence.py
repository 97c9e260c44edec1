"""Exact-equality checks after a fault: every consumer holds the event store, once.

Shared by the broker-loss and database-restart tests: wait until the outbox is
drained and every consumer (ledger, metrics, dispatch) has applied every stored
event, then compare ids exactly, check the ledger's positions are gapless, that
metrics equal a rebuild from the ledger, and that reconciliation finds nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Collection
from datetime import timedelta
from typing import Final

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.reconcile import CONSUMER_SCHEMAS, missing_from_consumers
from tests.integration.metrics_io import JsonDict, Where, differences

SLICES: Final = (Where(), Where(region="shanghai-pudong"))


async def _ids(engine: AsyncEngine, sql: str) -> list[str]:
    async with engine.connect() as conn:
        return [str(v) for v in (await conn.execute(text(sql))).scalars()]


async def store_ids(engine: AsyncEngine) -> set[str]:
    return set(await _ids(engine, "SELECT event_id FROM event_store.order_event"))


async def processed_ids(engine: AsyncEngine, schema: str) -> set[str]:
    return set(await _ids(engine, f"SELECT event_id FROM {schema}.processed_event"))


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM event_store.outbox_message "
                    "WHERE published_at IS NULL"
                )
            )
            or 0
        )


async def wait_converged(engine: AsyncEngine, *, timeout: float) -> None:
    """Until the outbox is empty and every consumer applied every stored event.

    Gives up quietly after `timeout`: the assertions that follow say what is missing.
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                stored = await store_ids(engine)
                applied = [await processed_ids(engine, s) for s in CONSUMER_SCHEMAS]
                if await unpublished(engine) == 0 and all(stored <= a for a in applied):
                    break
                await asyncio.sleep(0.5)
    except TimeoutError:
        return
    await asyncio.sleep(1.0)  # anything extra (a double) would show up by now


async def assert_every_consumer_holds_exactly_the_store(
    engine: AsyncEngine, acknowledged: Collection[str]
) -> None:
    """Same ids everywhere, each once; gapless ledger; nothing left to reconcile."""
    stored = await store_ids(engine)
    assert set(acknowledged) <= stored, "an acknowledged event is not stored"
    ledger = await _ids(engine, "SELECT event_id FROM ledger.ledger_entry")
    assert len(ledger) == len(set(ledger)), "an event was appended twice"
    assert set(ledger) == stored, (
        f"ledger differs from the store: {len(stored - set(ledger))} missing, "
        f"{len(set(ledger) - stored)} extra"
    )
    positions = await _ids(
        engine, "SELECT position FROM ledger.ledger_entry ORDER BY position"
    )
    assert [int(p) for p in positions] == list(range(len(positions)))
    for schema in CONSUMER_SCHEMAS:
        applied = await processed_ids(engine, schema)
        assert applied == stored, (
            f"{schema} applied {len(stored - applied)} fewer, "
            f"{len(applied - stored)} unknown"
        )
    assert await unpublished(engine) == 0
    async with engine.connect() as conn:
        assert await missing_from_consumers(conn, grace=timedelta(0)) == []


async def _snapshot(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> dict[Where, JsonDict]:
    found = {}
    for where in SLICES:
        response = await client.get(
            "/v1/indicators", params=where.params(), headers=headers
        )
        assert response.status_code == 200, response.text
        found[where] = {k: v for k, v in response.json().items() if k != "as_of"}
    return found


async def assert_metrics_equal_a_rebuild(
    metrics_url: str, database_url: str, headers: dict[str, str]
) -> None:
    """The live indicators equal `servicetrail metrics rebuild` (a ledger replay)."""
    async with httpx.AsyncClient(base_url=metrics_url, timeout=10) as client:
        live = await _snapshot(client, headers)
        rebuild = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "services.cli", "metrics", "rebuild"),
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(rebuild.communicate(), 60)
        assert rebuild.returncode == 0, output.decode()
        rebuilt = await _snapshot(client, headers)
    for where in SLICES:
        found = differences(rebuilt[where], live[where])
        assert not found, f"rebuild differs for {where}: {found}"
