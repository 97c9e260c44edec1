"""`service_lifespan`: what every service's start opens, runs and stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch.store import tracking
from shared.db.base import EVENT_STORE_SCHEMA
from shared.events.topics import DISPATCH_GROUP, ORDER_EVENTS
from shared.kafka.consumer import ConsumedEvent
from shared.service import ServiceResources, ServiceState, service_lifespan
from shared.settings import CommonSettings
from tests.fixtures.stack import TEST_JWT_SECRET

pytestmark = pytest.mark.integration


class NeverCalled:
    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        raise AssertionError("a consumer that does not run handles nothing")


def settings_for(database_url: str) -> CommonSettings:
    # No broker: nothing below connects to one unless its task runs.
    return CommonSettings(database_url=database_url, jwt_secret=TEST_JWT_SECRET)


async def test_tasks_run_while_the_service_lives_and_are_cancelled_at_shutdown(
    database_url: str,
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def task() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def open_resources(service: ServiceResources) -> ServiceState:
        service.add_task(task)
        return service.state()

    lifespan = service_lifespan(settings_for(database_url), open_resources)
    async with lifespan(FastAPI()) as state:
        await asyncio.wait_for(started.wait(), timeout=10)
        assert not cancelled.is_set()
        assert list(state["readiness"]) == ["database"]
        await state["readiness"]["database"]()

    assert cancelled.is_set()


async def test_a_relay_and_a_consumer_that_do_not_run_are_still_checked_and_measured(
    database_url: str,
) -> None:
    async def open_resources(service: ServiceResources) -> ServiceState:
        service.add_relay(schema=EVENT_STORE_SCHEMA, run=False)
        service.add_consumer(
            tracking=tracking,
            group_id=DISPATCH_GROUP,
            topics=[ORDER_EVENTS],
            handler=NeverCalled(),
            check_against_store=True,
            run=False,
            readiness="consumer",
        )
        return service.state()

    lifespan = service_lifespan(settings_for(database_url), open_resources)
    async with lifespan(FastAPI()) as state:
        readiness = state["readiness"]
        assert list(readiness) == ["database", "broker", "consumer"]
        await readiness["database"]()
        with pytest.raises(ConnectionError, match="relay is not connected"):
            await readiness["broker"]()
        with pytest.raises(ConnectionError, match=f"{DISPATCH_GROUP} is not connected"):
            await readiness["consumer"]()
        # The outbox is measured relay or not; an unconnected group has no figures.
        backlog = await state["backlog"].measure()
        assert [(o.outbox, o.unpublished) for o in backlog.outboxes] == [
            (EVENT_STORE_SCHEMA, 0)
        ]
        assert backlog.consumers == []
