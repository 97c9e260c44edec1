"""Lost version races are decided again; only decisions are remembered (events.md v2).

A cancel without `expected_version` races a dispatcher's assignment on a fresh
order, 200 times over one app and database. Cancelling is allowed in every state
before completed, so whichever write gets the version first, the cancel must end
the order `cancelled`; the assignment is either stored first or refused because
the order was cancelled (a real decision). Retrying either id gets the same answer,
and no lost race is ever remembered as a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.refusals import refused_event
from shared.settings import CommonSettings
from tests.builders import random_ref
from tests.http_events import (
    MANUAL_ONLY,
    Json,
    Services,
    accepted_data,
    assert_problem,
    cancelled_data,
    event_body,
    started,
)

pytestmark = pytest.mark.integration

ROUNDS: Final = 200
DELAYS: Final = [n / 1000 for n in range(25)]


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


async def remembered_codes(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.scalars(select(refused_event.c.code))).all())


@dataclass(frozen=True)
class Race:
    """A customer's cancel and a dispatcher's assignment of one new order."""

    services: Services
    order_id: str
    customer_id: str
    cancel: Json
    assign: Json

    async def run(
        self, *, cancel_delay: float = 0.0
    ) -> tuple[httpx.Response, httpx.Response]:
        """Both writes at once, the cancel starting `cancel_delay` seconds later."""

        async def cancel() -> httpx.Response:
            await asyncio.sleep(cancel_delay)
            return await self.services.customer_posts(
                self.order_id, self.customer_id, self.cancel
            )

        assign = self.services.dispatch.post(
            f"/v1/orders/{self.order_id}/assign",
            headers=self.services.dispatcher,
            json=self.assign,
        )
        return await asyncio.gather(cancel(), assign)


async def test_a_cancel_racing_an_assignment_always_ends_cancelled(
    services: Services, engine: AsyncEngine
) -> None:
    technician_id = random_ref("tech")
    await services.register_technician(technician_id, skills=(MANUAL_ONLY,))
    outcomes: dict[int, int] = {}
    for round_ in range(ROUNDS):
        customer_id = random_ref("cust")
        race = Race(
            services,
            await services.create_order(customer_id),
            customer_id,
            cancel=event_body("cancelled", cancelled_data()),
            assign={"id": str(uuid4()), "technician_id": technician_id},
        )

        # The assignment reads the order and the technician before it writes, so
        # a cancel sent at once always takes the version first; delays swept from
        # 0 to 24 ms let either write reach the version first, and many of them
        # arrive while the other is between its read and its insert.
        cancelled, assigned = await race.run(cancel_delay=DELAYS[round_ % len(DELAYS)])
        assert cancelled.status_code == 201, cancelled.text
        if assigned.status_code != 201:
            assert_problem(assigned, 409, "transition_not_allowed")
        outcomes[assigned.status_code] = outcomes.get(assigned.status_code, 0) + 1
        assert (await services.order(race.order_id))["status"] == "cancelled"

        # The same ids again: the same answers, the order unchanged.
        cancelled_again, assigned_again = await race.run()
        assert cancelled_again.status_code == 201
        assert cancelled_again.json() == cancelled.json()
        assert assigned_again.status_code == assigned.status_code
        if assigned.status_code == 201:
            assert assigned_again.json() == assigned.json()
        else:
            assert assigned_again.json()["detail"] == assigned.json()["detail"]

    assert "version_conflict" not in await remembered_codes(engine)
    # Both orders of arrival happened, or the race was not a race.
    assert min(outcomes.get(201, 0), outcomes.get(409, 0)) >= ROUNDS // 20, outcomes


async def test_a_stale_expected_version_is_a_remembered_refusal(
    services: Services, engine: AsyncEngine
) -> None:
    technician_id = random_ref("tech")
    await services.register_technician(technician_id, skills=(MANUAL_ONLY,))
    customer_id = random_ref("cust")
    order_id = await services.create_order(customer_id)
    stale = event_body("cancelled", cancelled_data(), expected_version=0)

    first = await services.customer_posts(order_id, customer_id, stale)
    assert_problem(first, 409, "version_conflict")
    assert first.json()["current_version"] == 1
    # The order moves on; the refusal of that id stands as it was given.
    assigned = await services.assign(order_id, technician_id)
    assert assigned.status_code == 201, assigned.text
    again = await services.customer_posts(order_id, customer_id, stale)
    assert_problem(again, 409, "version_conflict")
    assert again.json()["current_version"] == 1
    assert "version_conflict" in await remembered_codes(engine)
    accepted = event_body("accepted", accepted_data(technician_id))
    response = await services.technician_posts(order_id, technician_id, accepted)
    assert response.status_code == 201, response.text
