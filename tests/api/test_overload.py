"""Overload: per-caller rate limits (429 + Retry-After) and bounded request sizes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Final
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body
from tests.http_events import Rows, assert_problem, count_rows

ORDERS: Final = "/v1/orders"
# Small enough to exhaust in a test, long enough that a slow machine still sends
# every request of a test inside one window.
BUDGET: Final = 3
WINDOW_SECONDS: Final = 4
RATE_LIMIT: Final = f"{BUDGET}/{WINDOW_SECONDS} seconds"

Auth = Callable[[Role, str], dict[str, str]]


@pytest.fixture
def auth(settings: CommonSettings) -> Auth:
    return bearer(settings)


def limited_intake(settings: CommonSettings, rate_limit: str = RATE_LIMIT) -> FastAPI:
    return create_intake(
        service_settings(
            settings, IntakeSettings, run_outbox_relay=False, rate_limit=rate_limit
        )
    )


@pytest_asyncio.fixture(loop_scope="session")
async def intake(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(limited_intake(settings)) as client:
        yield client


async def create_order(
    intake: httpx.AsyncClient, headers: dict[str, str]
) -> httpx.Response:
    return await intake.post(
        ORDERS, json={**new_order_body(), "id": str(uuid4())}, headers=headers
    )


async def spend_budget(intake: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for _ in range(BUDGET):
        assert (await create_order(intake, headers)).status_code == 201


def retry_after(response: httpx.Response) -> int:
    value = int(response.headers["Retry-After"])
    assert 1 <= value <= WINDOW_SECONDS
    return value


class TestRateLimit:
    async def test_the_request_over_the_budget_is_a_429_problem_and_stores_nothing(
        self, intake: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        customer = auth(Role.CUSTOMER, "greedy")
        await spend_budget(intake, customer)
        before = await count_rows(engine)

        response = await create_order(intake, customer)

        problem = assert_problem(response, 429, "too_many_requests")
        assert problem["instance"] == ORDERS
        retry_after(response)
        assert await count_rows(engine) == before == Rows(BUDGET, BUDGET)

    async def test_another_token_keeps_its_own_budget(
        self, intake: httpx.AsyncClient, auth: Auth
    ) -> None:
        await spend_budget(intake, auth(Role.CUSTOMER, "greedy"))
        assert (
            await create_order(intake, auth(Role.CUSTOMER, "greedy"))
        ).status_code == 429

        assert (
            await create_order(intake, auth(Role.CUSTOMER, "modest"))
        ).status_code == 201
        # The key is role and subject: the same id under another role is another caller.
        response = await intake.get(
            f"{ORDERS}?customer_id=greedy", headers=auth(Role.DISPATCHER, "greedy")
        )
        assert response.status_code == 200, response.text

    async def test_after_retry_after_the_request_passes_however_often_refused(
        self, intake: httpx.AsyncClient, auth: Auth
    ) -> None:
        customer = auth(Role.CUSTOMER, "insistent")
        await spend_budget(intake, customer)
        first = await create_order(intake, customer)
        assert first.status_code == 429
        # Refusals do not count: retrying too early must not push the reset away.
        for _ in range(5):
            assert (await create_order(intake, customer)).status_code == 429

        await asyncio.sleep(retry_after(first))

        assert (await create_order(intake, customer)).status_code == 201

    async def test_probes_and_scrapes_are_never_limited(
        self, intake: httpx.AsyncClient, auth: Auth
    ) -> None:
        customer = auth(Role.CUSTOMER, "prober")
        await spend_budget(intake, customer)
        for path in ("/healthz", "/readyz", "/metrics") * BUDGET:
            response = await intake.get(path, headers=customer)
            assert response.status_code in (200, 503), (path, response.text)

    async def test_requests_without_a_valid_token_are_limited_by_client_address(
        self, settings: CommonSettings
    ) -> None:
        app = limited_intake(settings)
        async with LifespanManager(app) as manager:
            one = httpx.AsyncClient(
                transport=httpx.ASGITransport(manager.app, client=("10.0.0.1", 1)),
                base_url="http://test",
            )
            other = httpx.AsyncClient(
                transport=httpx.ASGITransport(manager.app, client=("10.0.0.2", 1)),
                base_url="http://test",
            )
            async with one, other:
                bad = {"Authorization": "Bearer forged"}
                for _ in range(BUDGET):
                    assert (await one.get(ORDERS, headers=bad)).status_code == 401
                assert_problem(await one.get(ORDERS), 429, "too_many_requests")
                assert (await other.get(ORDERS)).status_code == 401

    async def test_an_empty_limit_turns_limiting_off(
        self, settings: CommonSettings, auth: Auth
    ) -> None:
        async with running(limited_intake(settings, rate_limit="")) as intake:
            customer = auth(Role.CUSTOMER, "unlimited")
            for _ in range(BUDGET + 2):
                assert (await create_order(intake, customer)).status_code == 201

    def test_an_unparseable_limit_stops_the_service_at_start(
        self, settings: CommonSettings
    ) -> None:
        with pytest.raises(ValueError, match="rate limit"):
            service_settings(settings, IntakeSettings, rate_limit="lots")


async def test_a_batch_body_over_its_limit_is_a_413_and_stores_nothing(
    settings: CommonSettings, auth: Auth, engine: AsyncEngine
) -> None:
    dispatch_settings = service_settings(
        settings,
        DispatchSettings,
        run_outbox_relay=False,
        run_assignment_consumer=False,
    )
    async with running(create_dispatch(dispatch_settings)) as dispatch:
        before = await count_rows(engine)
        response = await dispatch.post(
            "/v1/events:batch",
            content=b" " * (dispatch_settings.max_batch_body_bytes + 1),
            headers={
                **auth(Role.TECHNICIAN, "t-big"),
                "content-type": "application/json",
            },
        )
        assert_problem(response, 413, "request_too_large")
        assert await count_rows(engine) == before
