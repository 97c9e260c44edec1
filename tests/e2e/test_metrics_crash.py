"""SIGKILL the metrics service mid-stream; the indicators still count every event once.

The ledger and metrics run as real processes on the test's database and topics. The
test publishes ~150 random valid order histories to the order-events topic in small
chunks while it kills metrics several times, the last kill of each round landing as
soon as the restarted process has committed its first batch of a backlog. Afterwards
the live indicators must equal a brute-force reference computed from the published
events, and `python -m services.cli metrics rebuild` (a replay of the ledger) must
give the same numbers: nothing lost, nothing double counted.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.store import order_fact, rating, tracking
from shared.domain.actors import Role
from shared.domain.lifecycle import OrderEvent
from shared.events.topics import METRICS_GROUP
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.e2e.processes import free_port_block, services_stack, wait_ready
from tests.integration.metrics_io import (
    JsonDict,
    Where,
    assert_indicators,
    consumed,
    differences,
    interleave,
    publish_events,
    random_histories,
    reference_indicators,
)

pytestmark = pytest.mark.e2e

ORDERS: Final = 150
CHUNK: Final = 25
KILLS: Final = 4
TECHNICIANS: Final = ("tech-1", "tech-2", "tech-3", "tech-4")
REGIONS: Final = ("shanghai-pudong", "shanghai-minhang", "beijing-haidian")
START: Final = datetime(2026, 3, 2, tzinfo=UTC)


async def scalar(engine: AsyncEngine, statement: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(statement) or 0)  # type: ignore[call-overload]  # a select


async def applied_records(engine: AsyncEngine) -> int:
    offsets = tracking.consumer_offset
    return await scalar(
        engine,
        select(func.coalesce(func.sum(offsets.c.offset + 1), 0)).where(
            offsets.c.group_id == METRICS_GROUP
        ),
    )


async def snapshot(
    client: httpx.AsyncClient, headers: dict[str, str], slices: list[Where]
) -> dict[Where, JsonDict]:
    found = {}
    for where in slices:
        response = await client.get(
            "/v1/indicators", params=where.params(), headers=headers
        )
        assert response.status_code == 200, response.text
        found[where] = response.json()
    return found


async def test_killing_metrics_mid_stream_neither_loses_nor_doubles_an_indicator(
    settings: CommonSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    rng = random.Random(2026)
    histories = random_histories(
        rng,
        ORDERS,
        start=START,
        technicians=TECHNICIANS,
        regions=REGIONS,
        categories=("washing_machine", "air_conditioner"),
    )
    order_events: list[OrderEvent] = interleave(rng, histories)
    times = sorted({e.time for e in order_events})
    slices = [
        Where(),
        Where(region=REGIONS[0]),
        Where(technician_id=TECHNICIANS[1]),
        Where(start=times[len(times) // 4], end=times[3 * len(times) // 4]),
    ]

    base = free_port_block(2)
    stack = services_stack(
        settings, tmp_path, LOG_LEVEL="info", ALERT_INTERVAL_SECONDS="3600"
    )
    stack.start_service("ledger", base)
    metrics = stack.start_service("metrics", base + 1)
    headers = {
        "Authorization": "Bearer "
        + issue_token(settings, role=Role.DISPATCHER, subject="crash-dispatcher")
    }
    try:
        for service in stack.services.values():
            await asyncio.to_thread(wait_ready, service.url)
        published = 0
        chaos_done = asyncio.Event()
        killed_mid_stream: list[int] = []

        async def publisher() -> None:
            nonlocal published
            for start in range(0, len(order_events), CHUNK):
                chunk = order_events[start : start + CHUNK]
                published += await publish_events(settings, chunk)
                # Spread the stream over the chaos, then send the rest at once.
                if not chaos_done.is_set():
                    await asyncio.sleep(0.3)

        async def kill_metrics_mid_batch() -> None:
            # Down long enough for a backlog, then killed as soon as the restarted
            # process has committed its first batch of it.
            stack.stop_service("metrics", sig=signal.SIGKILL)
            await asyncio.sleep(0.7)
            before = await applied_records(engine)
            stack.start_service("metrics")
            async with asyncio.timeout(30):
                while await applied_records(engine) == before:
                    if before >= len(order_events):
                        break  # nothing left to apply: kill it anyway
                    await asyncio.sleep(0.005)
            stack.stop_service("metrics", sig=signal.SIGKILL)
            if await applied_records(engine) < len(order_events):
                killed_mid_stream.append(await applied_records(engine))
            stack.start_service("metrics")

        async def chaos() -> None:
            try:
                for _ in range(KILLS):
                    await asyncio.sleep(rng.uniform(0.2, 0.8))
                    await kill_metrics_mid_batch()
            finally:
                chaos_done.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(chaos())
            group.create_task(publisher())
        assert published == len(order_events)
        # The kills landed while events were still to be applied.
        assert len(killed_mid_stream) >= KILLS // 2, killed_mid_stream
        await asyncio.to_thread(wait_ready, metrics.url)

        async with asyncio.timeout(60):
            while await applied_records(engine) < len(order_events):
                await asyncio.sleep(0.2)
            while await scalar(
                engine, text("SELECT count(*) FROM ledger.ledger_entry")
            ) < len(order_events):
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything extra (a double) would show up by now

        async with httpx.AsyncClient(base_url=metrics.url, timeout=10) as client:
            live = await snapshot(client, headers, slices)
            assert consumed(live[Where()]) == len(order_events)
            for where, payload in live.items():
                assert_indicators(
                    payload["indicators"],
                    reference_indicators(order_events, where),
                    f"live, slice {where}",
                )

            rebuild = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                "metrics",
                "rebuild",
                env={**os.environ, "DATABASE_URL": settings.database_url},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(rebuild.communicate(), 60)
            assert rebuild.returncode == 0, output.decode()
            assert str(len(order_events)) in output.decode()

            rebuilt = await snapshot(client, headers, slices)
        for where in slices:
            found = differences(
                {k: v for k, v in rebuilt[where].items() if k != "as_of"},
                {k: v for k, v in live[where].items() if k != "as_of"},
            )
            assert not found, f"rebuild differs for {where}: {found}"
    finally:
        stack.stop()

    # Each order once, each rating once.
    assert await scalar(engine, select(func.count()).select_from(order_fact)) == len(
        {e.order_id for e in order_events}
    )
    assert await scalar(engine, select(func.count()).select_from(rating)) == sum(
        e.data.TYPE == "rated" for e in order_events
    )
    assert metrics.restarts == 0  # every restart was the test's own
