"""SIGKILL the broker mid-stream: it comes back empty, and the system heals by itself.

The embedded broker keeps topics in memory, so a restart loses every topic, record
and consumer group. All four services run as real processes on a broker of the
test's own. Clients drive full order lifecycles through intake and dispatch; the
metrics process is killed just before the broker, so events it never applied are
lost with the broker. While the broker is down every post must still get its 201
(the outbox grows); then the stack's supervisor restarts the broker on the same port
and re-creates the topics, and nothing else is done by hand: the relay must notice
its acknowledged records vanished, re-publish what any consumer lacks and rewind
the consumers. Afterwards every consumer holds exactly the event store's events.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Final

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.stack import Stack
from services.stack.servers import free_port
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.e2e.convergence import (
    assert_every_consumer_holds_exactly_the_store,
    assert_metrics_equal_a_rebuild,
    wait_converged,
)
from tests.e2e.processes import free_port_block, wait_ready
from tests.http_events import Order, Services, completed_data, rated_data

pytestmark = pytest.mark.e2e

CLIENTS: Final = 4
BEFORE_SECONDS: Final = 3.0
DOWN_SECONDS: Final = 4.0
AFTER_SECONDS: Final = 3.0


async def lifecycle(services: Services, acknowledged: list[str]) -> None:
    """One order from request to rating; each helper asserts its 201."""
    order = await Order.create(services)
    await order.to_approved()
    await order.technician("completed", completed_data())
    await order.customer("rated", rated_data())
    acknowledged.append(order.order_id)


async def test_a_broker_restart_that_loses_every_record_heals_by_itself(
    settings: CommonSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    base = free_port_block(4)
    stack = Stack(
        home=tmp_path,
        database_url=settings.database_url,
        extra_env={
            "JWT_SECRET": settings.hs256_secret(),
            "ALERT_INTERVAL_SECONDS": "3600",
        },
    )
    broker = stack.start_broker(port=free_port())
    try:
        await asyncio.to_thread(stack.create_topics)
        for offset, name in enumerate(("intake", "dispatch", "ledger", "metrics")):
            stack.start_service(name, base + offset)
        for service in stack.services.values():
            await asyncio.to_thread(wait_ready, service.url)
        orders: list[str] = []
        stop_at = time.monotonic() + BEFORE_SECONDS + DOWN_SECONDS + AFTER_SECONDS
        intake_url = stack.services["intake"].url
        dispatch_url = stack.services["dispatch"].url

        async def client_loop() -> None:
            async with (
                httpx.AsyncClient(base_url=intake_url, timeout=10) as intake,
                httpx.AsyncClient(base_url=dispatch_url, timeout=10) as dispatch,
            ):
                services = Services(intake, dispatch, bearer(settings))
                while time.monotonic() < stop_at:
                    await lifecycle(services, orders)

        async def chaos() -> int:
            await asyncio.sleep(BEFORE_SECONDS - 1.0)
            # Metrics falls behind, then the broker takes its backlog with it.
            stack.stop_service("metrics", sig=signal.SIGKILL)
            await asyncio.sleep(1.0)
            broker.kill()
            during = len(orders)
            stack.start_service("metrics")
            await asyncio.sleep(DOWN_SECONDS)
            completed_while_down = len(orders) - during
            # What `servicetrail up` does every second.
            assert await asyncio.to_thread(stack.supervise_once) == ["broker"]
            assert broker.is_running()
            return completed_while_down

        async with asyncio.TaskGroup() as group:
            down = group.create_task(chaos())
            for _ in range(CLIENTS):
                group.create_task(client_loop())
        assert down.result() > 0, "no lifecycle completed while the broker was down"
        assert len(orders) > 10

        await wait_converged(engine, timeout=90)
        await assert_every_consumer_holds_exactly_the_store(engine, [])
        headers = {
            "Authorization": "Bearer "
            + issue_token(settings, role=Role.DISPATCHER, subject="loss-dispatcher")
        }
        await assert_metrics_equal_a_rebuild(
            stack.services["metrics"].url, settings.database_url, headers
        )
        assert all(s.restarts == 0 for s in stack.services.values())
    finally:
        stack.stop()
