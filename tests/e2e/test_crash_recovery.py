"""SIGKILL the relay and the ledger consumer mid-stream; nothing acknowledged is lost.

Intake (which runs the outbox relay) and the ledger run as real processes on the
test's database and topics. A mobile-app-like client posts orders, retrying with the
same event id until it gets an answer, while the test kills and restarts intake and
the ledger several times. Afterwards the ledger must hold exactly the event store's
events, each once, at gapless positions.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.store import ledger_entry
from shared.db.event_store import order_event
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.e2e.processes import free_port_block, services_stack, wait_ready
from tests.http_bodies import new_order_body

pytestmark = pytest.mark.e2e

MAX_ORDERS = 5000
CLIENTS = 8
KILLS_EACH = 4


async def post_until_acknowledged(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, object],
    headers: dict[str, str],
) -> str:
    """Post like a mobile app on a bad network: same id, retry until a 201."""
    while True:
        try:
            response = await client.post(url, json=body, headers=headers)
            if response.status_code == 201:
                return str(response.json()["event"]["id"])
            assert response.status_code >= 500, response.text
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)


async def scalar(engine: AsyncEngine, statement: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(statement) or 0)  # type: ignore[call-overload]  # a select


async def test_killing_relay_and_ledger_mid_stream_loses_and_doubles_nothing(
    settings: CommonSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    base = free_port_block(4)
    stack = services_stack(settings, tmp_path, LOG_LEVEL="info")
    intake = stack.start_service("intake", base)
    stack.start_service("ledger", base + 2)
    try:
        for service in stack.services.values():
            await asyncio.to_thread(wait_ready, service.url)
        headers = {
            "Authorization": "Bearer "
            + issue_token(settings, role=Role.CUSTOMER, subject="crash-customer")
        }
        acknowledged: list[str] = []
        chaos_done = asyncio.Event()

        async def client_loop() -> None:
            # Keep a stream flowing for as long as the chaos lasts (bounded).
            async with httpx.AsyncClient(timeout=5) as client:
                while not chaos_done.is_set() and len(acknowledged) < MAX_ORDERS:
                    acknowledged.append(
                        await post_until_acknowledged(
                            client, f"{intake.url}/v1/orders", new_order_body(), headers
                        )
                    )
                    await asyncio.sleep(0.01)

        async def ledger_size() -> int:
            return await scalar(engine, select(func.count()).select_from(ledger_entry))

        async def kill_ledger_mid_batch() -> None:
            # Down long enough for a backlog, then killed as soon as it is busy
            # catching up: the kill lands inside a batch, not in an idle wait.
            stack.stop_service("ledger", sig=signal.SIGKILL)
            await asyncio.sleep(0.7)
            before = await ledger_size()
            stack.start_service("ledger")
            async with asyncio.timeout(30):
                while await ledger_size() == before:
                    await asyncio.sleep(0.005)
            stack.stop_service("ledger", sig=signal.SIGKILL)
            stack.start_service("ledger")

        async def kill_relay() -> None:
            stack.stop_service("intake", sig=signal.SIGKILL)
            stack.start_service("intake")
            await asyncio.to_thread(wait_ready, intake.url)

        async def chaos() -> None:
            rng = random.Random(42)
            try:
                for _ in range(KILLS_EACH):
                    await asyncio.sleep(rng.uniform(0.2, 0.6))
                    await kill_relay()
                    await asyncio.sleep(rng.uniform(0.2, 0.6))
                    await kill_ledger_mid_batch()
            finally:
                chaos_done.set()

        # A TaskGroup cancels the chaos if a client fails, so nothing restarts a
        # service after the stack has been stopped.
        async with asyncio.TaskGroup() as group:
            group.create_task(chaos())
            for _ in range(CLIENTS):
                group.create_task(client_loop())
        assert len(acknowledged) > 100

        stored = await scalar(engine, select(func.count()).select_from(order_event))
        # Converge, or give up after a while and let the assertions below say what
        # is missing.
        for _ in range(300):
            if await ledger_size() >= stored:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything extra (a double) would show up by now
    finally:
        stack.stop()

    async with engine.connect() as conn:
        store_ids = set((await conn.execute(select(order_event.c.event_id))).scalars())
        ledger_rows = (
            await conn.execute(
                select(ledger_entry.c.event_id, ledger_entry.c.position).order_by(
                    ledger_entry.c.position
                )
            )
        ).all()
        unpublished = await conn.scalar(
            text(
                "SELECT count(*) FROM event_store.outbox_message WHERE published_at IS NULL"
            )
        )
    ledger_ids = [str(row.event_id) for row in ledger_rows]
    assert len(ledger_ids) == len(set(ledger_ids)), "an event was appended twice"
    assert set(ledger_ids) == {str(i) for i in store_ids}, (
        "ledger differs from the store"
    )
    assert set(acknowledged) <= set(ledger_ids), "an acknowledged event is missing"
    assert [row.position for row in ledger_rows] == list(range(len(ledger_rows)))
    assert unpublished == 0
    assert intake.restarts == 0  # restarts here were the test's own, not crashes
