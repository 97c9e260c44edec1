"""Crash PostgreSQL mid-stream: clients get 503 + Retry-After, services heal by themselves.

All four services run as real processes on a PostgreSQL server of the test's own
(fsync on: an immediate shutdown must not lose a commit) and the session's broker.
Clients post like mobile apps (same event id until a 201): a new order to intake,
then its cancellation to dispatch. Mid-stream the server shuts down immediately, as a
crash would; every answer meanwhile must be a 503 with `Retry-After` (never a 500,
never a hang past the client's timeout) and `/readyz` must say not ready. The server
then starts again on the same port; nobody restarts a service, yet they reconnect,
and every consumer ends up with exactly the event store's events.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.stack import Stack
from services.stack.postgres import EmbeddedPostgres
from services.stack.servers import free_port
from shared.db import migrate
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.e2e.convergence import (
    assert_every_consumer_holds_exactly_the_store,
    assert_metrics_equal_a_rebuild,
    wait_converged,
)
from tests.e2e.processes import free_port_block, wait_ready
from tests.http_bodies import new_order_body
from tests.http_events import cancelled_data, event_body

pytestmark = pytest.mark.e2e

CLIENTS: Final = 4
BEFORE_SECONDS: Final = 3.0
DOWN_SECONDS: Final = 3.0
AFTER_SECONDS: Final = 4.0
CLIENT_TIMEOUT: Final = 10.0


async def post_until_acknowledged(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    answers: Counter[int],
) -> dict[str, Any]:
    """Same body (same event id) until a 201; anything but a 503 + Retry-After fails."""
    while True:
        response = await client.post(url, json=body, headers=headers)
        answers[response.status_code] += 1
        if response.status_code == 201:
            created: dict[str, Any] = response.json()
            return created
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
        await asyncio.sleep(0.1)


async def test_a_database_crash_mid_stream_loses_and_doubles_nothing(
    settings: CommonSettings, tmp_path: Path
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    await asyncio.to_thread(postgres.start)
    base = free_port_block(4)
    stack = Stack(
        home=tmp_path,
        kafka_bootstrap=settings.kafka_bootstrap_servers,
        extra_env={
            "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "JWT_SECRET": settings.hs256_secret(),
            "KAFKA_SESSION_TIMEOUT_MS": "2000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "ALERT_INTERVAL_SECONDS": "3600",
        },
    )
    engine = None
    try:
        stack.database_url = postgres.create_database("servicetrail")
        await asyncio.to_thread(migrate.upgrade, stack.database_url)
        engine = create_async_engine(
            CommonSettings(database_url=stack.database_url).sqlalchemy_url,
            poolclass=NullPool,
        )
        for offset, name in enumerate(("intake", "dispatch", "ledger", "metrics")):
            stack.start_service(name, base + offset)
        for service in stack.services.values():
            await asyncio.to_thread(wait_ready, service.url)
        acknowledged: list[str] = []
        answers: Counter[int] = Counter()
        stop_at = time.monotonic() + BEFORE_SECONDS + DOWN_SECONDS + AFTER_SECONDS
        dispatcher = {
            "Authorization": "Bearer "
            + issue_token(settings, role=Role.DISPATCHER, subject="db-dispatcher")
        }

        async def client_loop(number: int) -> None:
            customer = {
                "Authorization": "Bearer "
                + issue_token(settings, role=Role.CUSTOMER, subject=f"db-cust-{number}")
            }
            async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
                while time.monotonic() < stop_at:
                    order = await post_until_acknowledged(
                        client,
                        f"{stack.services['intake'].url}/v1/orders",
                        new_order_body(),
                        customer,
                        answers,
                    )
                    acknowledged.append(order["event"]["id"])
                    cancelled = await post_until_acknowledged(
                        client,
                        f"{stack.services['dispatch'].url}/v1/orders/"
                        f"{order['order_id']}/events",
                        event_body("cancelled", cancelled_data()),
                        dispatcher,
                        answers,
                    )
                    acknowledged.append(cancelled["event"]["id"])

        async def not_ready_everywhere() -> None:
            async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
                for service in stack.services.values():
                    async with asyncio.timeout(15):
                        while (await client.get(f"{service.url}/readyz")).is_success:
                            await asyncio.sleep(0.1)

        async def chaos() -> None:
            await asyncio.sleep(BEFORE_SECONDS)
            await asyncio.to_thread(postgres.crash)
            await not_ready_everywhere()
            await asyncio.sleep(DOWN_SECONDS)
            await asyncio.to_thread(postgres.start)

        async with asyncio.TaskGroup() as group:
            group.create_task(chaos())
            for number in range(CLIENTS):
                group.create_task(client_loop(number))
        assert answers[503] > 0, answers
        assert len(acknowledged) > 20

        # Nobody restarts anything: each service reconnects on its own.
        for service in stack.services.values():
            await asyncio.to_thread(wait_ready, service.url, timeout=60)
        await wait_converged(engine, timeout=90)
        await assert_every_consumer_holds_exactly_the_store(engine, acknowledged)
        await assert_metrics_equal_a_rebuild(
            stack.services["metrics"].url, stack.database_url, dispatcher
        )
        assert all(
            s.process is not None and s.process.poll() is None
            for s in stack.services.values()
        )
    finally:
        stack.stop()
        if engine is not None:
            await engine.dispose()
        await asyncio.to_thread(postgres.stop)
