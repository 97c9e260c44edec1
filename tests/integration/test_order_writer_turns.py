"""The order writer serves callers waiting for its connections in arrival order.

asyncpg's pool gives a released connection to whichever task asks first: a caller
arriving after the release, but before the waiter woken for it runs, takes it, and
the waiter queues again at the back. Without the writer's own queue, the second
caller here was overtaken by hundreds; under load a few posts waited many times
the median.
"""

from __future__ import annotations

import asyncio
from typing import Final
from uuid import uuid4

import pytest

from shared.db.engine import create_driver_pool
from shared.domain.rules import Policy
from shared.events.topics import SOURCE_INTAKE
from shared.orders.writer import OrderWriter
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

SERVED: Final = 10


async def test_callers_get_the_connection_in_the_order_they_asked(
    settings: CommonSettings,
) -> None:
    one_connection = settings.model_copy(update={"database_pool_size": 1})
    pool = await create_driver_pool(one_connection)
    writer = OrderWriter(pool, policy=Policy(), source=SOURCE_INTAKE)
    served: list[int] = []

    async def call(arrival: int) -> None:
        # One connection: the calls' answers come in the order they were served.
        assert await writer.find_state(uuid4()) is None
        served.append(arrival)

    try:
        calls: list[asyncio.Task[None]] = []
        # A new caller on every turn of the event loop while the first ones are
        # served, so some arrive between a release and the moment the waiter
        # woken for it runs.
        while len(served) < SERVED:
            calls.append(asyncio.create_task(call(len(calls))))
            await asyncio.sleep(0)
        await asyncio.gather(*calls)
    finally:
        await pool.close()

    assert served == sorted(served)
